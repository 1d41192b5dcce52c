#pragma once

// The architecture table and the factories it drives: resnet18 ... resnet152,
// ResNeXt and Wide ResNets (torchvision's names), timm's variants (resnet50d,
// seresnext26d_32x4d, ecaresnet50t, ...) and the paper's CIFAR-10 networks
// resnet20 ... resnet110. Adding an architecture is one row.

#include <resnet/model/blocks.h>
#include <resnet/model/network.h>
#include <resnet/model/options.h>

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
  /// The name `resnet::create` takes, torchvision's or timm's ("resnet50",
  /// "seresnext26d_32x4d", ...).
  std::string_view name;
  /// The design it follows.
  Family family;
  /// Its residual block.
  BlockKind block;
  /// Blocks per stage; 0 where a stage is absent.
  std::array<int64_t, 4> layers;
  /// Groups of the bottlenecks' 3x3 convolutions (32 or 64 for ResNeXt).
  int64_t groups;
  /// Channels per group relative to 64 (`BlockOptions::base_width`): 64 for
  /// ResNets, 4 or 8 for ResNeXt, 128 for Wide ResNets.
  int64_t width_per_group;
  /// The stem's convolutions and the deep stems' width.
  StemType stem_type = StemType::Default;
  /// Width of the deep stems (`ResNetOptions::stem_width`); 64 and unused
  /// for `StemType::Default`.
  int64_t stem_width = 64;
  /// Averaging projection shortcuts (ResNet-D).
  bool avg_down = false;
  /// Attention in every block.
  Attention attention = Attention::None;

  /// Planes of the first stage, the default of `ResNetOptions::base_channels`
  /// for this row: 16 for the paper's CIFAR networks, 64 otherwise.
  constexpr int64_t base_channels() const {
    return family == Family::CifarPaper ? 16 : 64;
  }

  /// Blocks per stage of the stages present (`layers` without the zeros).
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

/// The architecture table as an X-macro, one row per architecture: name,
/// family, block kind, blocks per stage (0 where a stage is absent), groups,
/// width per group, stem type, stem width, avg_down, attention. It expands
/// into `kArchitectures` and into the typed factories below, so that adding
/// an architecture is one row here.
// clang-format off
#define RESNET_ARCHITECTURES(X) \
  /* torchvision's ResNets (He et al. 2015), ResNeXt (Xie et al. 2017) and Wide ResNets (Zagoruyko and Komodakis 2016). */ \
  X(resnet18, TorchVision, Basic, (2, 2, 2, 2), 1, 64, Default, 64, false, None) \
  X(resnet34, TorchVision, Basic, (3, 4, 6, 3), 1, 64, Default, 64, false, None) \
  X(resnet50, TorchVision, Bottleneck, (3, 4, 6, 3), 1, 64, Default, 64, false, None) \
  X(resnet101, TorchVision, Bottleneck, (3, 4, 23, 3), 1, 64, Default, 64, false, None) \
  X(resnet152, TorchVision, Bottleneck, (3, 8, 36, 3), 1, 64, Default, 64, false, None) \
  X(resnext50_32x4d, TorchVision, Bottleneck, (3, 4, 6, 3), 32, 4, Default, 64, false, None) \
  X(resnext101_32x8d, TorchVision, Bottleneck, (3, 4, 23, 3), 32, 8, Default, 64, false, None) \
  X(resnext101_64x4d, TorchVision, Bottleneck, (3, 4, 23, 3), 64, 4, Default, 64, false, None) \
  X(wide_resnet50_2, TorchVision, Bottleneck, (3, 4, 6, 3), 1, 128, Default, 64, false, None) \
  X(wide_resnet101_2, TorchVision, Bottleneck, (3, 4, 23, 3), 1, 128, Default, 64, false, None) \
  /* timm's variants (timm.models.resnet): ResNet-C/D/S/T stems and shortcuts (He et al. 2019; c = deep stem of width 32, s = deep stem of width 64, d = c + avg_down, t = tiered stem + avg_down), SE-ResNet(eXt) (Hu et al. 2018), ECA-ResNet (Wang et al. 2020). */ \
  X(resnet18d, Timm, Basic, (2, 2, 2, 2), 1, 64, Deep, 32, true, None) \
  X(resnet26, Timm, Bottleneck, (2, 2, 2, 2), 1, 64, Default, 64, false, None) \
  X(resnet26d, Timm, Bottleneck, (2, 2, 2, 2), 1, 64, Deep, 32, true, None) \
  X(resnet26t, Timm, Bottleneck, (2, 2, 2, 2), 1, 64, DeepTiered, 32, true, None) \
  X(resnet34d, Timm, Basic, (3, 4, 6, 3), 1, 64, Deep, 32, true, None) \
  X(resnet50c, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, Deep, 32, false, None) \
  X(resnet50s, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, Deep, 64, false, None) \
  X(resnet50d, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, Deep, 32, true, None) \
  X(resnet50t, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, DeepTiered, 32, true, None) \
  X(resnet101d, Timm, Bottleneck, (3, 4, 23, 3), 1, 64, Deep, 32, true, None) \
  X(resnet152d, Timm, Bottleneck, (3, 8, 36, 3), 1, 64, Deep, 32, true, None) \
  X(seresnet50, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, Default, 64, false, SqueezeExcite) \
  X(seresnext26d_32x4d, Timm, Bottleneck, (2, 2, 2, 2), 32, 4, Deep, 32, true, SqueezeExcite) \
  X(seresnext50_32x4d, Timm, Bottleneck, (3, 4, 6, 3), 32, 4, Default, 64, false, SqueezeExcite) \
  X(seresnext101_32x4d, Timm, Bottleneck, (3, 4, 23, 3), 32, 4, Default, 64, false, SqueezeExcite) \
  X(ecaresnet26t, Timm, Bottleneck, (2, 2, 2, 2), 1, 64, DeepTiered, 32, true, EfficientChannel) \
  X(ecaresnet50d, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, Deep, 32, true, EfficientChannel) \
  X(ecaresnet50t, Timm, Bottleneck, (3, 4, 6, 3), 1, 64, DeepTiered, 32, true, EfficientChannel) \
  X(ecaresnet101d, Timm, Bottleneck, (3, 4, 23, 3), 1, 64, Deep, 32, true, EfficientChannel) \
  /* The paper's CIFAR-10 networks, 6n+2 layers. */ \
  X(resnet20, CifarPaper, Basic, (3, 3, 3, 0), 1, 64, Default, 64, false, None) \
  X(resnet32, CifarPaper, Basic, (5, 5, 5, 0), 1, 64, Default, 64, false, None) \
  X(resnet44, CifarPaper, Basic, (7, 7, 7, 0), 1, 64, Default, 64, false, None) \
  X(resnet56, CifarPaper, Basic, (9, 9, 9, 0), 1, 64, Default, 64, false, None) \
  X(resnet110, CifarPaper, Basic, (18, 18, 18, 0), 1, 64, Default, 64, false, None)
// clang-format on

#define RESNET_DETAIL_UNPAREN(...) __VA_ARGS__
#define RESNET_DETAIL_ROW(         \
    NAME,                          \
    FAMILY,                        \
    BLOCK,                         \
    LAYERS,                        \
    GROUPS,                        \
    WIDTH,                         \
    STEM,                          \
    STEM_WIDTH,                    \
    AVG_DOWN,                      \
    ATTENTION)                     \
  {#NAME,                          \
   Family::FAMILY,                 \
   BlockKind::BLOCK,               \
   {RESNET_DETAIL_UNPAREN LAYERS}, \
   GROUPS,                         \
   WIDTH,                          \
   StemType::STEM,                 \
   STEM_WIDTH,                     \
   AVG_DOWN,                       \
   Attention::ATTENTION},

/// Every architecture `resnet::create` knows, in the order
/// `resnet::architectures()` lists them.
inline constexpr Architecture kArchitectures[] = {
    RESNET_ARCHITECTURES(RESNET_DETAIL_ROW)};

#undef RESNET_DETAIL_ROW
#undef RESNET_DETAIL_UNPAREN

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

// The typed factories, one per row of the table:
//   template <class Norm = torch::nn::BatchNorm2d>
//   ResNet<BasicBlock<Norm>> resnet18(const ResNetOptions& options = {});
// and so on for every architecture, with `Bottleneck<Norm>` where the row
// says so.
#define RESNET_DETAIL_BLOCK_Basic BasicBlock
#define RESNET_DETAIL_BLOCK_Bottleneck Bottleneck
#define RESNET_DETAIL_FACTORY(NAME, FAMILY, BLOCK, ...) \
  template <class Norm = torch::nn::BatchNorm2d>        \
  ResNet<RESNET_DETAIL_BLOCK_##BLOCK<Norm>> NAME(       \
      const ResNetOptions& options = {}) {              \
    return detail::make<                                \
        RESNET_DETAIL_BLOCK_##BLOCK<Norm>,              \
        detail::architecture_index(#NAME)>(options);    \
  }

RESNET_ARCHITECTURES(RESNET_DETAIL_FACTORY)

#undef RESNET_DETAIL_FACTORY
#undef RESNET_DETAIL_BLOCK_Basic
#undef RESNET_DETAIL_BLOCK_Bottleneck

/// The key mapping for checkpoints of the widely copied CIFAR ResNets in the
/// style of kuangliu/pytorch-cifar (`shortcut.0/.1` and `linear`), to load
/// into `resnet18` ... `resnet152` built with `Stem::Cifar`:
/// `layer1.0.shortcut.0.weight` -> `layer1.0.downsample.0.weight`,
/// `linear.weight` -> `fc.weight`. Use as `LoadOptions().key_map(...)`.
inline std::string kuangliu_cifar_key(const std::string& key) {
  std::string out = key;
  if (out.rfind("linear.", 0) == 0) {
    out = "fc." + out.substr(7);
  }
  const std::string from = ".shortcut.";
  for (auto pos = out.find(from); pos != std::string::npos;
       pos = out.find(from, pos)) {
    out.replace(pos, from.size(), ".downsample.");
  }
  return out;
}

} // namespace resnet
