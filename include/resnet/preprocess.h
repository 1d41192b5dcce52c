#pragma once

// How an image becomes a network's input: the steps of torchvision's and
// timm's evaluation transforms (resize the shorter side, crop the centre,
// normalize), as data that weights carry with them.

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace resnet {

/// The mean of ImageNet's RGB channels, for values in [0, 1].
inline const std::vector<double> kImageNetMean = {0.485, 0.456, 0.406};
/// The standard deviation of ImageNet's RGB channels, for values in [0, 1].
inline const std::vector<double> kImageNetStd = {0.229, 0.224, 0.225};

/// The evaluation preprocessing of a network: the image's shorter side is
/// resized to `resize` (`interpolation`, antialiased), its central `crop` x
/// `crop` square kept, the values scaled to [0, 1] and normalized per
/// channel. torchvision's ImageNet weights: 256 (232 for some V2) and 224,
/// bilinear; timm's: resize = floor(crop / crop_pct), often bicubic.
struct Preprocess {
  /// Shorter side after resizing; 0 keeps the image's size.
  TORCH_ARG(int64_t, resize) = 256;
  /// Side of the central crop; 0 keeps the whole (resized) image.
  TORCH_ARG(int64_t, crop) = 224;
  /// "bilinear" or "bicubic".
  TORCH_ARG(std::string, interpolation) = "bilinear";
  /// Per-channel mean, for values in [0, 1]; one per input channel.
  TORCH_ARG(std::vector<double>, mean) = kImageNetMean;
  /// Per-channel standard deviation, one per channel like `mean`, each > 0.
  TORCH_ARG(std::vector<double>, std) = kImageNetStd;
};

} // namespace resnet
