#pragma once

// The functions a ResNet is made of besides its modules, shared by the network
// and anything that runs one differently (the fused inference copy): the input
// check, the stem's pooling, the parameter-free shortcut and the classifier
// head.

#include <c10/util/Optional.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>

namespace resnet::functional {

/// Checks an input for a network taking `in_channels` channels whose total
/// stride is `total_stride`; `imagenet_stem` adds a hint for small images.
inline void check_network_input(
    const torch::Tensor& x,
    int64_t in_channels,
    int64_t total_stride,
    bool imagenet_stem) {
  TORCH_CHECK(
      x.defined(), "resnet: expected an input tensor, got an undefined one");
  TORCH_CHECK(
      x.dim() == 4 && x.size(1) == in_channels,
      "resnet: expected input [N, C, H, W] with C=",
      in_channels,
      ", got ",
      x.sizes());
  TORCH_CHECK(
      x.is_floating_point(),
      "resnet: expected a floating-point input, got ",
      x.scalar_type());
  TORCH_CHECK(
      x.size(2) >= total_stride && x.size(3) >= total_stride,
      "resnet: input of ",
      x.size(2),
      "x",
      x.size(3),
      " is smaller than the network's total stride; expected at least ",
      total_stride,
      "x",
      total_stride,
      imagenet_stem ? " (Stem::Cifar suits small images)" : "");
}

/// The stem's 3x3, stride-2 max pooling (torchvision's `maxpool`).
inline torch::Tensor stem_max_pool(const torch::Tensor& x) {
  return torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
}

/// Global average pooling of `features` [N, C, h, w] to [N, C], then `fc`
/// where there is one.
inline torch::Tensor classifier_head(
    const torch::Tensor& features,
    torch::nn::Linear& fc) {
  auto pooled = torch::adaptive_avg_pool2d(features, {1, 1});
  pooled = (pooled.is_mkldnn() ? pooled.to_dense() : pooled).flatten(1);
  return fc.is_empty() ? pooled : fc(pooled);
}

/// The parameter-free shortcut ("option A" of He et al.): every `stride`-th
/// pixel of `x`, its channels zero-padded to `out_channels`, half the new
/// channels on each side.
inline torch::Tensor zero_pad_shortcut(
    const torch::Tensor& x,
    int64_t stride,
    int64_t out_channels) {
  using torch::indexing::Slice;
  const auto sub = x.index(
      {Slice(),
       Slice(),
       Slice(0, c10::nullopt, stride),
       Slice(0, c10::nullopt, stride)});
  const int64_t extra = out_channels - x.size(1);
  return torch::constant_pad_nd(
      sub, {0, 0, 0, 0, extra / 2, extra - extra / 2});
}

} // namespace resnet::functional
