#pragma once

// The architecture table and the factories it drives: resnet18 ... resnet152,
// ResNeXt and Wide ResNets (torchvision's names), and the paper's CIFAR-10
// networks resnet20 ... resnet110. Adding an architecture is one row.

#include <resnet/blocks.h>
#include <resnet/network.h>
#include <resnet/options.h>

#include <torch/nn/modules/batchnorm.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace resnet {

/// Which design an architecture follows.
enum class Family {
  /// torchvision's ImageNet networks: four stages of 64 ... 512 planes,
  /// projection shortcuts, the stem chosen by `ResNetOptions::stem`.
  TorchVision,
  /// He et al. 2015, section 4.2: three stages of 16, 32 and 64 channels of
  /// basic blocks, the 3x3 stem, zero-padding shortcuts by default.
  CifarPaper,
};

/// One row of the architecture table.
struct Architecture {
  std::string_view name;
  Family family;
  BlockKind block;
  /// Blocks per stage; 0 where a stage is absent.
  std::array<int64_t, 4> layers;
  int64_t groups;
  int64_t width_per_group;

  constexpr int64_t base_channels() const {
    return family == Family::CifarPaper ? 16 : 64;
  }

  std::vector<int64_t> stages() const {
    std::vector<int64_t> out;
    for (auto n : layers) {
      if (n > 0) {
        out.push_back(n);
      }
    }
    return out;
  }
};

/// Every architecture `resnet::create` knows, in the order
/// `resnet::architectures()` lists them.
// clang-format off
inline constexpr Architecture kArchitectures[] = {
  // name, family, block, blocks per stage, groups, width_per_group
  {"resnet18", Family::TorchVision, BlockKind::Basic, {2, 2, 2, 2}, 1, 64},
  {"resnet34", Family::TorchVision, BlockKind::Basic, {3, 4, 6, 3}, 1, 64},
  {"resnet50", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64},
  {"resnet101", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 23, 3}, 1, 64},
  {"resnet152", Family::TorchVision, BlockKind::Bottleneck, {3, 8, 36, 3}, 1, 64},
  {"resnext50_32x4d", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 6, 3}, 32, 4},
  {"resnext101_32x8d", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 23, 3}, 32, 8},
  {"resnext101_64x4d", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 23, 3}, 64, 4},
  {"wide_resnet50_2", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 128},
  {"wide_resnet101_2", Family::TorchVision, BlockKind::Bottleneck, {3, 4, 23, 3}, 1, 128},
  {"resnet20", Family::CifarPaper, BlockKind::Basic, {3, 3, 3, 0}, 1, 64},
  {"resnet32", Family::CifarPaper, BlockKind::Basic, {5, 5, 5, 0}, 1, 64},
  {"resnet44", Family::CifarPaper, BlockKind::Basic, {7, 7, 7, 0}, 1, 64},
  {"resnet56", Family::CifarPaper, BlockKind::Basic, {9, 9, 9, 0}, 1, 64},
  {"resnet110", Family::CifarPaper, BlockKind::Basic, {18, 18, 18, 0}, 1, 64},
};
// clang-format on

/// The names of all architectures.
inline std::vector<std::string> architectures() {
  std::vector<std::string> names;
  for (const auto& a : kArchitectures) {
    names.emplace_back(a.name);
  }
  return names;
}

/// The row named `name`, or nullptr.
inline const Architecture* find_architecture(std::string_view name) {
  for (const auto& a : kArchitectures) {
    if (a.name == name) {
      return &a;
    }
  }
  return nullptr;
}

namespace detail {

constexpr std::size_t architecture_index(std::string_view name) {
  std::size_t i = 0;
  while (i < std::size(kArchitectures) && kArchitectures[i].name != name) {
    ++i;
  }
  return i;
}

// A field the architecture fixes wins over the option's default; a
// conflicting explicit value is an error (as torchvision's factories do).
inline int64_t merge_field(
    const Architecture& a,
    const char* field,
    int64_t option,
    int64_t option_default,
    int64_t fixed) {
  if (fixed == option_default) {
    return option;
  }
  TORCH_CHECK(
      option == option_default || option == fixed,
      "resnet: ",
      a.name,
      " has ",
      field,
      "=",
      fixed,
      ", got ",
      field,
      "=",
      option);
  return fixed;
}

/// The options `a` is built with, given the caller's.
inline ResNetOptions resolve_options(const Architecture& a, ResNetOptions o) {
  const ResNetOptions defaults;
  o.groups(merge_field(a, "groups", o.groups(), defaults.groups(), a.groups));
  o.width_per_group(merge_field(
      a,
      "width_per_group",
      o.width_per_group(),
      defaults.width_per_group(),
      a.width_per_group));
  if (o.base_channels() == defaults.base_channels()) {
    o.base_channels(a.base_channels());
  }
  if (a.family == Family::CifarPaper) {
    o.stem(Stem::Cifar);
  }
  if (o.shortcut() == Shortcut::Auto) {
    o.shortcut(
        a.family == Family::CifarPaper ? Shortcut::ZeroPad
                                       : Shortcut::Projection);
  }
  return o;
}

template <class Block>
ResNet<Block> make(const Architecture& a, const ResNetOptions& o) {
  TORCH_CHECK(
      a.block == Block::Impl::kind,
      "resnet: ",
      a.name,
      " is built from ",
      a.block == BlockKind::Basic ? "BasicBlock" : "Bottleneck",
      " blocks");
  return ResNet<Block>(a.stages(), resolve_options(a, o));
}

template <class Block, std::size_t I>
ResNet<Block> make(const ResNetOptions& o) {
  static_assert(
      kArchitectures[I].block == Block::Impl::kind,
      "factory and table disagree on the block kind");
  return make<Block>(kArchitectures[I], o);
}

} // namespace detail

/// Builds the architecture named `name` (see `architectures()`) with
/// normalization `Norm`. An unknown name is an error listing the known ones.
template <class Norm = torch::nn::BatchNorm2d>
AnyResNet create(std::string_view name, const ResNetOptions& options = {}) {
  const Architecture* a = find_architecture(name);
  if (a == nullptr) {
    std::string known;
    for (const auto& row : kArchitectures) {
      known += known.empty() ? "" : ", ";
      known += row.name;
    }
    TORCH_CHECK(
        false,
        "resnet: unknown architecture '",
        std::string(name),
        "'; known: ",
        known);
  }
  if (a->block == BlockKind::Basic) {
    return detail::make<BasicBlock<Norm>>(*a, options);
  }
  return detail::make<Bottleneck<Norm>>(*a, options);
}

// clang-format off
#define RESNET_DETAIL_FACTORY(NAME, BLOCK)                                   \
  template <class Norm = torch::nn::BatchNorm2d>                             \
  ResNet<BLOCK<Norm>> NAME(const ResNetOptions& options = {}) {              \
    return detail::make<BLOCK<Norm>, detail::architecture_index(#NAME)>(     \
        options);                                                            \
  }
// clang-format on

/// torchvision's ResNets (He et al. 2015).
RESNET_DETAIL_FACTORY(resnet18, BasicBlock)
RESNET_DETAIL_FACTORY(resnet34, BasicBlock)
RESNET_DETAIL_FACTORY(resnet50, Bottleneck)
RESNET_DETAIL_FACTORY(resnet101, Bottleneck)
RESNET_DETAIL_FACTORY(resnet152, Bottleneck)
/// ResNeXt (Xie et al. 2017).
RESNET_DETAIL_FACTORY(resnext50_32x4d, Bottleneck)
RESNET_DETAIL_FACTORY(resnext101_32x8d, Bottleneck)
RESNET_DETAIL_FACTORY(resnext101_64x4d, Bottleneck)
/// Wide ResNets (Zagoruyko and Komodakis 2016), torchvision's variant.
RESNET_DETAIL_FACTORY(wide_resnet50_2, Bottleneck)
RESNET_DETAIL_FACTORY(wide_resnet101_2, Bottleneck)
/// The paper's CIFAR-10 networks, 6n+2 layers.
RESNET_DETAIL_FACTORY(resnet20, BasicBlock)
RESNET_DETAIL_FACTORY(resnet32, BasicBlock)
RESNET_DETAIL_FACTORY(resnet44, BasicBlock)
RESNET_DETAIL_FACTORY(resnet56, BasicBlock)
RESNET_DETAIL_FACTORY(resnet110, BasicBlock)

#undef RESNET_DETAIL_FACTORY

} // namespace resnet
