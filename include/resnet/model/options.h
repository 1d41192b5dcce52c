#pragma once

// Options for ResNet networks and their residual blocks.

#include <torch/arg.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <vector>

namespace resnet {

/// How the network turns an image into the first feature map.
enum class Stem {
  /// 7x7 convolution with stride 2, then a 3x3 max pool with stride 2
  /// (torchvision; total stride 4). For images of about 100 pixels and more.
  ImageNet,
  /// 3x3 convolution with stride 1 and no pooling (He et al. 2015, section
  /// 4.2). For small images such as CIFAR-10 or Fashion-MNIST.
  Cifar,
};

/// The stem for square images of `size` pixels: `Stem::Cifar` up to 64
/// pixels (CIFAR, Fashion-MNIST, Tiny ImageNet), where the ImageNet stem's
/// stride of 4 would leave layer4 with 2x2 maps or less; `Stem::ImageNet`
/// above.
inline Stem stem_for_image_size(int64_t size) {
  return size <= 64 ? Stem::Cifar : Stem::ImageNet;
}

/// "cifar" or "imagenet".
inline const char* to_string(Stem stem) {
  return stem == Stem::Cifar ? "cifar" : "imagenet";
}

/// The stem named "cifar" or "imagenet", or for "auto" the one for images
/// of `size` pixels (`stem_for_image_size`).
inline Stem parse_stem(const std::string& name, int64_t size) {
  TORCH_CHECK(
      name == "auto" || name == "cifar" || name == "imagenet",
      "resnet: unknown stem '",
      name,
      "' (auto, cifar or imagenet)");
  return name == "auto" ? stem_for_image_size(size)
      : name == "cifar" ? Stem::Cifar
                        : Stem::ImageNet;
}

/// How a block's identity path follows a change of shape (stride or width).
enum class Shortcut {
  /// The architecture's own choice: `Projection` for the torchvision family,
  /// `ZeroPad` for the paper's CIFAR networks (resnet20 ... resnet110).
  Auto,
  /// Option A of the paper: subsample spatially and pad the extra channels
  /// with zeros. Adds no parameters.
  ZeroPad,
  /// Option B of the paper: a 1x1 convolution and a normalization layer,
  /// registered as `downsample.0` and `downsample.1` like torchvision's.
  Projection,
};

/// The convolutions of the stem (timm's `stem_type`). Each is followed by a
/// normalization layer and ReLU; `ResNetOptions::stem` decides the stride and
/// the max pool.
enum class StemType {
  /// One convolution of `base_channels` outputs: 7x7 with `Stem::ImageNet`,
  /// 3x3 with `Stem::Cifar`. Registered as `conv1` (torchvision, timm '').
  Default,
  /// Three 3x3 convolutions of `stem_width`, `stem_width` and
  /// `2 * stem_width` outputs (timm 'deep': the c, d, s variants), registered
  /// as `conv1.0 conv1.1 conv1.3 conv1.4 conv1.6` like timm's Sequential,
  /// with the last norm as `bn1`.
  Deep,
  /// Like `Deep` with `3 * (stem_width / 4)`, `stem_width` and
  /// `2 * stem_width` outputs (timm 'deep_tiered': the t variants).
  DeepTiered,
};

/// A channel attention module applied to each block's residual branch after
/// its last normalization layer, before the shortcut is added; registered as
/// `se` like timm's.
enum class Attention {
  /// None.
  None,
  /// Squeeze-and-excitation (Hu et al. 2018): global average, 1x1 conv
  /// `se.fc1` to `C / 16` channels rounded to a multiple of 8 (at least 8),
  /// ReLU, 1x1 conv `se.fc2` back to `C`, sigmoid gate; both with bias.
  SqueezeExcite,
  /// Efficient channel attention (Wang et al. 2020): global average, a 1-D
  /// convolution `se.conv` across channels without bias, of odd size
  /// `max(3, t or t + 1)` with `t = int((log2(C) + 1) / 2)`, sigmoid gate.
  EfficientChannel,
};

/// The name of a stem type, for messages.
inline const char* to_string(StemType type) {
  switch (type) {
    case StemType::Default:
      return "Default";
    case StemType::Deep:
      return "Deep";
    case StemType::DeepTiered:
      return "DeepTiered";
  }
  return "?";
}

/// The name of an attention kind, for messages.
inline const char* to_string(Attention kind) {
  switch (kind) {
    case Attention::None:
      return "None";
    case Attention::SqueezeExcite:
      return "SqueezeExcite";
    case Attention::EfficientChannel:
      return "EfficientChannel";
  }
  return "?";
}

/// Options of a whole network. Fields that an architecture defines itself
/// (layers, block kind) are not here: see `resnet::architectures()`.
struct ResNetOptions {
  /// Number of outputs of the final `fc` layer. 0 builds no `fc`: `forward`
  /// then returns the pooled features.
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Number of channels of the input images (3 for RGB, 1 for grey).
  TORCH_ARG(int64_t, in_channels) = 3;
  /// The stem. The paper's CIFAR networks always use `Stem::Cifar`.
  TORCH_ARG(Stem, stem) = Stem::ImageNet;
  /// Number of groups of the 3x3 convolution in bottleneck blocks (ResNeXt's
  /// cardinality). Basic blocks require 1.
  TORCH_ARG(int64_t, groups) = 1;
  /// Channels per group in bottleneck blocks, relative to 64 (Wide ResNets
  /// use 128). Basic blocks require 64.
  TORCH_ARG(int64_t, width_per_group) = 64;
  /// For stages 2, 3 and 4: replace the stage's stride 2 with dilation, which
  /// keeps the spatial size (for segmentation backbones).
  TORCH_ARG(std::vector<bool>, replace_stride_with_dilation) = {
      false,
      false,
      false};
  /// Zero the last normalization layer of each block, so that every residual
  /// block starts as the identity (Goyal et al. 2017).
  TORCH_ARG(bool, zero_init_residual) = false;
  /// The shortcut used where a block changes shape.
  TORCH_ARG(Shortcut, shortcut) = Shortcut::Auto;
  /// Channels of the first stage before expansion; stage i has
  /// `base_channels * 2^i`. 64 for the torchvision family, 16 for the paper's
  /// CIFAR networks.
  TORCH_ARG(int64_t, base_channels) = 64;
  /// The stem's convolutions. `Deep` and `DeepTiered` keep the stride and
  /// pooling that `stem` chooses (stride 1 in their first convolution and no
  /// pooling with `Stem::Cifar`).
  TORCH_ARG(StemType, stem_type) = StemType::Default;
  /// Width of the deep stems (see `StemType`); they put out `2 * stem_width`
  /// channels. Unused by `StemType::Default`, which puts out `base_channels`
  /// (as timm's 7x7 stem puts out 64 whatever its `stem_width`).
  TORCH_ARG(int64_t, stem_width) = 64;
  /// Projection shortcuts average-pool before their 1x1 convolution instead
  /// of striding it (ResNet-D of He et al. 2019, timm's `avg_down`):
  /// `downsample.0` is a 2x2 average pool (ceil mode, padding not counted;
  /// the identity in blocks without stride or dilation), `downsample.1` the
  /// convolution, `downsample.2` the norm.
  TORCH_ARG(bool, avg_down) = false;
  /// The attention module of every block.
  TORCH_ARG(Attention, attention) = Attention::None;
  /// Stochastic depth (Huang et al. 2016) in training: block i of the n in
  /// the network drops its residual branch per sample with probability
  /// `drop_path_rate * i / (n - 1)` and scales kept ones by 1 / (1 - p), as
  /// timm does. No effect in eval mode. In [0, 1].
  TORCH_ARG(double, drop_path_rate) = 0.0;
};

/// Options of one residual block, filled in by the network.
struct BlockOptions {
  /// A block from `in_channels` channels with `planes` inner channels; the
  /// rest at their defaults.
  BlockOptions(int64_t in_channels, int64_t planes)
      : in_channels_(in_channels), planes_(planes) {}

  /// Channels coming in.
  TORCH_ARG(int64_t, in_channels);
  /// Channels of the block's inner convolutions before expansion; the block
  /// puts out `planes * expansion` channels.
  TORCH_ARG(int64_t, planes);
  /// Stride of the block (on the 3x3 convolution).
  TORCH_ARG(int64_t, stride) = 1;
  /// Groups of the 3x3 convolution (bottleneck blocks only).
  TORCH_ARG(int64_t, groups) = 1;
  /// Channels per group relative to 64 (bottleneck blocks only).
  TORCH_ARG(int64_t, base_width) = 64;
  /// Dilation of the 3x3 convolution(s).
  TORCH_ARG(int64_t, dilation) = 1;
  /// Dilation of the block's stage; differs from `dilation` in the first
  /// block of a dilated stage, which keeps the previous stage's. An averaging
  /// shortcut without stride pools with 'same' padding where it is > 1.
  TORCH_ARG(int64_t, stage_dilation) = 1;
  /// Shortcut used if the block changes shape; `Auto` means `Projection`.
  TORCH_ARG(Shortcut, shortcut) = Shortcut::Projection;
  /// Average-pool in the projection shortcut instead of striding its
  /// convolution (see `ResNetOptions::avg_down`).
  TORCH_ARG(bool, avg_down) = false;
  /// The attention module on the residual branch.
  TORCH_ARG(Attention, attention) = Attention::None;
  /// Probability of dropping the residual branch per sample in training.
  TORCH_ARG(double, drop_path) = 0.0;
};

namespace detail {

/// The checks a network's options and its blocks' share: `rate` (named
/// `name`) in [0, 1], and averaging shortcuts only with projections.
inline void check_shared_options(
    const char* who,
    const char* rate_name,
    double rate,
    bool avg_down,
    Shortcut shortcut) {
  TORCH_CHECK(
      rate >= 0.0 && rate <= 1.0,
      "resnet: ",
      who,
      ": ",
      rate_name,
      " must be in [0, 1], got ",
      rate);
  TORCH_CHECK(
      !(avg_down && shortcut == Shortcut::ZeroPad),
      "resnet: ",
      who,
      ": avg_down applies to projection shortcuts, got Shortcut::ZeroPad");
}

} // namespace detail

} // namespace resnet
