#pragma once

// Image preprocessing as torchvision's ImageNet transforms do it: resize the
// shorter side (bilinear or bicubic, antialiased), crop the centre, scale to
// [0, 1], normalize per channel.

#include <resnet/preprocess.h>

#include <torch/arg.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace resnet {

/// Resizes `image` ([C, H, W] or [N, C, H, W], any dtype) so that its
/// shorter side is `size`, keeping the aspect ratio as torchvision does
/// (the longer side is truncated). `interpolation` "bilinear" or "bicubic",
/// with antialiasing, as `torchvision.transforms.functional.resize(...,
/// antialias=True)`. Returns float32.
inline torch::Tensor resize_shorter_side(
    const torch::Tensor& image,
    int64_t size,
    const std::string& interpolation = "bilinear") {
  TORCH_CHECK(
      image.dim() == 3 || image.dim() == 4,
      "resnet: resize expects an image [C, H, W] or [N, C, H, W], got ",
      image.sizes());
  TORCH_CHECK(size > 0, "resnet: resize expects size > 0, got ", size);
  TORCH_CHECK(
      interpolation == "bilinear" || interpolation == "bicubic",
      "resnet: resize interpolates \"bilinear\" or \"bicubic\", not \"",
      interpolation,
      "\"");
  const int64_t h = image.size(-2), w = image.size(-1);
  TORCH_CHECK(
      h > 0 && w > 0, "resnet: cannot resize an empty image ", image.sizes());
  int64_t new_h = size, new_w = size;
  if (w <= h) {
    new_h = static_cast<int64_t>(static_cast<double>(size) * h / w);
  } else {
    new_w = static_cast<int64_t>(static_cast<double>(size) * w / h);
  }
  auto batch = image.dim() == 3 ? image.unsqueeze(0) : image;
  batch = batch.to(torch::kFloat);
  if (new_h != h || new_w != w) {
    namespace F = torch::nn::functional;
    batch = F::interpolate(
        batch,
        F::InterpolateFuncOptions()
            .size(std::vector<int64_t>{new_h, new_w})
            .mode(
                interpolation == "bicubic"
                    ? F::InterpolateFuncOptions::mode_t(torch::kBicubic)
                    : F::InterpolateFuncOptions::mode_t(torch::kBilinear))
            .align_corners(false)
            .antialias(true));
  }
  return image.dim() == 3 ? batch.squeeze(0) : batch;
}

/// The central `size` x `size` crop, placed as torchvision's center_crop
/// places it. The image must be at least that large.
inline torch::Tensor center_crop(const torch::Tensor& image, int64_t size) {
  TORCH_CHECK(
      image.dim() >= 2,
      "resnet: center_crop expects an image [..., H, W], got ",
      image.sizes());
  const int64_t h = image.size(-2), w = image.size(-1);
  TORCH_CHECK(
      size > 0 && h >= size && w >= size,
      "resnet: cannot crop ",
      size,
      "x",
      size,
      " from an image of ",
      h,
      "x",
      w);
  const auto top = static_cast<int64_t>(std::nearbyint((h - size) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((w - size) / 2.0));
  return image.narrow(-2, top, size).narrow(-1, left, size);
}

/// (image - mean) / std per channel; `image` is [C, H, W] or [N, C, H, W],
/// floating point, on any device.
inline torch::Tensor normalize(
    const torch::Tensor& image,
    const std::vector<double>& mean,
    const std::vector<double>& std) {
  TORCH_CHECK(
      image.dim() == 3 || image.dim() == 4,
      "resnet: normalize expects an image [C, H, W] or [N, C, H, W], got ",
      image.sizes());
  TORCH_CHECK(
      image.is_floating_point(),
      "resnet: normalize expects a floating-point image (values in [0, 1]), "
      "got ",
      image.scalar_type());
  const int64_t c = image.size(-3);
  TORCH_CHECK(
      static_cast<int64_t>(mean.size()) == c &&
          static_cast<int64_t>(std.size()) == c,
      "resnet: normalize needs one mean and std per channel (",
      c,
      "), got ",
      mean.size(),
      " and ",
      std.size());
  for (double v : std) {
    TORCH_CHECK(v > 0, "resnet: normalize: every std must be > 0, got ", v);
  }
  const auto opts = torch::TensorOptions().dtype(image.scalar_type());
  const auto m =
      torch::tensor(mean, opts).reshape({c, 1, 1}).to(image.device());
  const auto s = torch::tensor(std, opts).reshape({c, 1, 1}).to(image.device());
  return (image - m) / s;
}

/// A decoded 8-bit image [C, H, W] -> the network's input [1, C, crop, crop]
/// (float32): resize, crop, scale to [0, 1], normalize.
inline torch::Tensor preprocess(
    const torch::Tensor& image,
    const Preprocess& options = {}) {
  TORCH_CHECK(
      image.dim() == 3,
      "resnet: preprocess expects an image [C, H, W], got ",
      image.sizes());
  auto x = options.resize() > 0
      ? resize_shorter_side(image, options.resize(), options.interpolation())
      : image.to(torch::kFloat);
  if (image.scalar_type() == torch::kByte &&
      options.interpolation() == "bicubic") {
    x = x.clamp(0, 255); // bicubic overshoots; 8-bit pixels do not
  }
  if (options.crop() > 0) {
    x = center_crop(x, options.crop());
  }
  if (image.scalar_type() == torch::kByte) {
    x = x / 255.0;
  }
  return normalize(x, options.mean(), options.std()).unsqueeze(0).contiguous();
}

} // namespace resnet
