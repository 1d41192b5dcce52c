#pragma once

// MNIST-format IDX datasets (MNIST, Fashion-MNIST, KMNIST), gzipped or not,
// with the dataset told from the images' statistics.

#include <resnet/data/cifar.h>
#include <resnet/data/idx.h>
#include <resnet/data/image_dataset.h>
#include <resnet/error.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace resnet::data {

namespace detail {

// The published statistics of a training set of 28x28 images (mean and
// standard deviation of the pixels, in [0, 1]), with windows wide enough for
// the test sets and for a sample of a few thousand images, narrow enough to
// keep the others (and EMNIST, mean 0.172 to 0.175) out; and the fraction of
// zero pixels (MNIST 0.81, Fashion-MNIST 0.50; a wide window for KMNIST).
struct IdxReference {
  const char *kind, *title;
  double mean, mean_tolerance, deviation, zeros_low, zeros_high;
};

inline constexpr IdxReference kIdxReferences[] = {
    {"mnist", "MNIST", 0.1307, 0.015, 0.3081, 0.75, 0.87},
    {"kmnist", "KMNIST", 0.1918, 0.012, 0.3483, 0.45, 0.90},
    {"fashion-mnist", "Fashion-MNIST", 0.2860, 0.020, 0.3530, 0.44, 0.56},
};
inline constexpr double kIdxStdTolerance = 0.015;
inline constexpr int64_t kIdxMinImages = 1000;
inline constexpr int64_t kIdxSampleImages = 4096;

} // namespace detail

/// What the pixel statistics of IDX images [N, 1, H, W] or [N, H, W] uint8
/// say they are: "fashion-mnist", "mnist", "kmnist", or "" when unsure
/// (anything but 28x28 pixels, fewer than 1000 images, or statistics outside
/// every known set's). Looks at up to 4096 images spread over the set.
inline std::string idx_kind(const torch::Tensor& images) {
  if (!images.defined() || images.scalar_type() != torch::kByte ||
      !(images.dim() == 3 || (images.dim() == 4 && images.size(1) == 1)) ||
      images.size(-1) != 28 || images.size(-2) != 28 ||
      images.size(0) < detail::kIdxMinImages) {
    return "";
  }
  const int64_t n = images.size(0);
  const int64_t step = std::max<int64_t>(1, n / detail::kIdxSampleImages);
  const auto sample = images.slice(0, 0, n, step)
                          .slice(0, 0, detail::kIdxSampleImages)
                          .to(torch::kFloat)
                          .div_(255);
  const auto count = static_cast<double>(sample.numel());
  const double mean = sample.sum(torch::kDouble).item<double>() / count;
  const double square = sample.square().sum(torch::kDouble).item<double>();
  const double deviation =
      std::sqrt(std::max(0.0, square / count - mean * mean));
  const double zeros = sample.eq(0).sum().item<double>() / count;
  for (const auto& r : detail::kIdxReferences) {
    if (std::abs(mean - r.mean) <= r.mean_tolerance &&
        std::abs(deviation - r.deviation) <= detail::kIdxStdTolerance &&
        zeros >= r.zeros_low && zeros <= r.zeros_high) {
      return r.kind;
    }
  }
  return "";
}

namespace detail {

// The IDX file names of a split: images (rank 3) or labels (rank 1), in
// both spellings.
inline std::vector<std::string> idx_names(Split split, bool images) {
  const std::string base =
      std::string(split == Split::Train ? "train" : "t10k") +
      (images ? "-images" : "-labels");
  const std::string type = images ? "idx3-ubyte" : "idx1-ubyte";
  return {base + "-" + type, base + "." + type};
}

// Images [N, 1, H, W] and labels [N] int64 from a pair of IDX files.
inline LabelledImages read_idx_pair(
    const std::string& images_file,
    const std::string& labels_file) {
  auto images = read_idx(images_file);
  TORCH_CHECK(
      images.dim() == 3 && images.scalar_type() == torch::kByte,
      "resnet: '" + images_file + "': expected 8-bit images [N, H, W], got " +
          describe(images));
  auto labels = read_idx(labels_file);
  TORCH_CHECK(
      labels.dim() == 1 && c10::isIntegralType(labels.scalar_type(), false) &&
          labels.size(0) == images.size(0),
      "resnet: '" + labels_file + "': expected " +
          std::to_string(images.size(0)) + " integer labels to match '" +
          images_file + "', got " + describe(labels));
  return {images.unsqueeze(1), labels.to(torch::kLong)};
}

inline ImageDataset labelled(
    LabelledImages data,
    std::vector<std::string> classes,
    std::string name,
    const std::string& source) {
  check_targets(data.targets, classes.size(), "'" + source + "'");
  return ImageDataset(
      std::move(data.images),
      std::move(data.targets),
      std::move(classes),
      std::move(name));
}

inline ImageDataset
open_idx(const std::string& dir, Split split, std::string kind) {
  TORCH_CHECK(
      kind.empty() || kind == "mnist" || kind == "fashion-mnist" ||
          kind == "kmnist" || kind == "idx",
      "resnet: unknown IDX dataset kind '" + kind +
          "' (expected mnist, fashion-mnist, kmnist, idx, or \"\" to guess)");
  const auto images_file = require_file(dir, idx_names(split, true));
  const auto labels_file = require_file(dir, idx_names(split, false));
  auto data = read_idx_pair(images_file, labels_file);
  if (kind.empty()) {
    kind = idx_kind(data.images);
    kind = kind.empty() ? "idx" : kind;
  }
  std::vector<std::string> classes;
  if (kind == "idx") {
    const int64_t high =
        data.targets.numel() > 0 ? data.targets.max().item<int64_t>() : 0;
    for (int64_t c = 0; c <= high; ++c) {
      classes.push_back(std::to_string(c));
    }
  } else {
    classes = class_names(kind);
  }
  return labelled(std::move(data), std::move(classes), kind, labels_file);
}

} // namespace detail

/// MNIST-format IDX files: MNIST, Fashion-MNIST, KMNIST and the like.
class IdxDataset : public ImageDataset {
 public:
  /// `dir` holds MNIST-layout IDX files: train-images-idx3-ubyte,
  /// train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
  /// t10k-labels-idx1-ubyte (also spelt train-images.idx3-ubyte), each
  /// optionally .gz. `kind` names the classes: "mnist", "fashion-mnist",
  /// "kmnist", "idx" (classes "0" to the highest label) or "" to tell from
  /// the images (idx_kind, falling back to "idx").
  IdxDataset(const std::string& dir, Split split, const std::string& kind = "")
      : ImageDataset(detail::open_idx(dir, split, kind)) {}

  /// Explicit files.
  IdxDataset(
      const std::string& images_file,
      const std::string& labels_file,
      std::vector<std::string> classes,
      std::string name)
      : ImageDataset(detail::labelled(
            detail::read_idx_pair(images_file, labels_file),
            std::move(classes),
            std::move(name),
            labels_file)) {}
};

} // namespace resnet::data
