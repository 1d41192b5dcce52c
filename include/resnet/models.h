#pragma once

// The architecture table and the factories it drives: resnet18 ... resnet152,
// ResNeXt and Wide ResNets (torchvision's names), timm's variants (resnet50d,
// seresnext26d_32x4d, ecaresnet50t, ...) and the paper's CIFAR-10 networks
// resnet20 ... resnet110. Adding an architecture is one row.

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
  /// timm's ResNet variants: the torchvision design with the row's stem,
  /// shortcut and attention (He et al. 2019 "bag of tricks" stems and
  /// shortcuts, SE-ResNeXt, ECA-ResNet), timm's names and parameter names.
  Timm,
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
  /// The stem's convolutions and the deep stems' width.
  StemType stem_type = StemType::Default;
  int64_t stem_width = 64;
  /// Averaging projection shortcuts (ResNet-D).
  bool avg_down = false;
  /// Attention in every block.
  Attention attention = Attention::None;

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
  // name, family, block, blocks per stage, groups, width_per_group[, stem
  // type, stem width, avg_down, attention]
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
  // timm's variants (timm.models.resnet), followed by their stem type, stem
  // width, avg_down and attention. Suffixes: c = deep stem of width 32,
  // s = deep stem of width 64, d = c + avg_down, t = tiered stem + avg_down.
  {"resnet18d", Family::Timm, BlockKind::Basic, {2, 2, 2, 2}, 1, 64, StemType::Deep, 32, true},
  {"resnet26", Family::Timm, BlockKind::Bottleneck, {2, 2, 2, 2}, 1, 64},
  {"resnet26d", Family::Timm, BlockKind::Bottleneck, {2, 2, 2, 2}, 1, 64, StemType::Deep, 32, true},
  {"resnet26t", Family::Timm, BlockKind::Bottleneck, {2, 2, 2, 2}, 1, 64, StemType::DeepTiered, 32, true},
  {"resnet34d", Family::Timm, BlockKind::Basic, {3, 4, 6, 3}, 1, 64, StemType::Deep, 32, true},
  {"resnet50c", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::Deep, 32, false},
  {"resnet50s", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::Deep, 64, false},
  {"resnet50d", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::Deep, 32, true},
  {"resnet50t", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::DeepTiered, 32, true},
  {"resnet101d", Family::Timm, BlockKind::Bottleneck, {3, 4, 23, 3}, 1, 64, StemType::Deep, 32, true},
  {"resnet152d", Family::Timm, BlockKind::Bottleneck, {3, 8, 36, 3}, 1, 64, StemType::Deep, 32, true},
  {"seresnet50", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::Default, 64, false, Attention::SqueezeExcite},
  {"seresnext26d_32x4d", Family::Timm, BlockKind::Bottleneck, {2, 2, 2, 2}, 32, 4, StemType::Deep, 32, true, Attention::SqueezeExcite},
  {"seresnext50_32x4d", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 32, 4, StemType::Default, 64, false, Attention::SqueezeExcite},
  {"seresnext101_32x4d", Family::Timm, BlockKind::Bottleneck, {3, 4, 23, 3}, 32, 4, StemType::Default, 64, false, Attention::SqueezeExcite},
  {"ecaresnet26t", Family::Timm, BlockKind::Bottleneck, {2, 2, 2, 2}, 1, 64, StemType::DeepTiered, 32, true, Attention::EfficientChannel},
  {"ecaresnet50d", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::Deep, 32, true, Attention::EfficientChannel},
  {"ecaresnet50t", Family::Timm, BlockKind::Bottleneck, {3, 4, 6, 3}, 1, 64, StemType::DeepTiered, 32, true, Attention::EfficientChannel},
  {"ecaresnet101d", Family::Timm, BlockKind::Bottleneck, {3, 4, 23, 3}, 1, 64, StemType::Deep, 32, true, Attention::EfficientChannel},
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

inline std::string describe_value(int64_t v) {
  return std::to_string(v);
}
inline std::string describe_value(bool v) {
  return v ? "true" : "false";
}
inline std::string describe_value(StemType v) {
  return std::string("StemType::") + to_string(v);
}
inline std::string describe_value(Attention v) {
  return std::string("Attention::") + to_string(v);
}

// A field the architecture fixes wins over the option's default; a
// conflicting explicit value is an error (as torchvision's factories do).
template <class T>
T merge_field(
    const Architecture& a,
    const char* field,
    T option,
    T option_default,
    T fixed) {
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
      describe_value(fixed),
      ", got ",
      field,
      "=",
      describe_value(option));
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
  o.stem_type(merge_field(
      a, "stem_type", o.stem_type(), defaults.stem_type(), a.stem_type));
  o.stem_width(merge_field(
      a, "stem_width", o.stem_width(), defaults.stem_width(), a.stem_width));
  o.avg_down(merge_field(
      a, "avg_down", o.avg_down(), defaults.avg_down(), a.avg_down));
  o.attention(merge_field(
      a, "attention", o.attention(), defaults.attention(), a.attention));
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
/// timm's variants: ResNet-C/D/S/T stems and shortcuts (He et al. 2019),
/// SE-ResNet(eXt) (Hu et al. 2018), ECA-ResNet (Wang et al. 2020).
RESNET_DETAIL_FACTORY(resnet18d, BasicBlock)
RESNET_DETAIL_FACTORY(resnet26, Bottleneck)
RESNET_DETAIL_FACTORY(resnet26d, Bottleneck)
RESNET_DETAIL_FACTORY(resnet26t, Bottleneck)
RESNET_DETAIL_FACTORY(resnet34d, BasicBlock)
RESNET_DETAIL_FACTORY(resnet50c, Bottleneck)
RESNET_DETAIL_FACTORY(resnet50s, Bottleneck)
RESNET_DETAIL_FACTORY(resnet50d, Bottleneck)
RESNET_DETAIL_FACTORY(resnet50t, Bottleneck)
RESNET_DETAIL_FACTORY(resnet101d, Bottleneck)
RESNET_DETAIL_FACTORY(resnet152d, Bottleneck)
RESNET_DETAIL_FACTORY(seresnet50, Bottleneck)
RESNET_DETAIL_FACTORY(seresnext26d_32x4d, Bottleneck)
RESNET_DETAIL_FACTORY(seresnext50_32x4d, Bottleneck)
RESNET_DETAIL_FACTORY(seresnext101_32x4d, Bottleneck)
RESNET_DETAIL_FACTORY(ecaresnet26t, Bottleneck)
RESNET_DETAIL_FACTORY(ecaresnet50d, Bottleneck)
RESNET_DETAIL_FACTORY(ecaresnet50t, Bottleneck)
RESNET_DETAIL_FACTORY(ecaresnet101d, Bottleneck)
/// The paper's CIFAR-10 networks, 6n+2 layers.
RESNET_DETAIL_FACTORY(resnet20, BasicBlock)
RESNET_DETAIL_FACTORY(resnet32, BasicBlock)
RESNET_DETAIL_FACTORY(resnet44, BasicBlock)
RESNET_DETAIL_FACTORY(resnet56, BasicBlock)
RESNET_DETAIL_FACTORY(resnet110, BasicBlock)

#undef RESNET_DETAIL_FACTORY

} // namespace resnet
