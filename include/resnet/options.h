#pragma once

// Options for ResNet networks and their residual blocks.

#include <torch/arg.h>

#include <cstdint>
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
};

/// Options of one residual block, filled in by the network.
struct BlockOptions {
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
  /// Shortcut used if the block changes shape; `Auto` means `Projection`.
  TORCH_ARG(Shortcut, shortcut) = Shortcut::Projection;
};

} // namespace resnet
