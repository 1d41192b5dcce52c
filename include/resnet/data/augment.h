#pragma once

// Batched training augmentations: random crops, flips, random erasing and
// timm's mixup/cutmix, on a float batch [N, C, H, W] on its own device.
//
// The random parameters (a few numbers per image) are drawn on the CPU from
// a std::mt19937_64 that the caller owns, turned into one tensor and moved
// to the batch's device, where batched operations (advanced indexing,
// masks) apply them to every image at once. The same generator state gives
// the same result on every device and with any number of loader workers.
// Not part of <resnet/resnet.h>.

#include <resnet/error.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace resnet::data {

namespace detail {

inline void check_batch(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(
      x.defined() && x.dim() == 4 && x.is_floating_point(),
      "resnet: ",
      what,
      " expects a floating-point batch [N, C, H, W], got ",
      resnet::detail::describe(x));
}

inline void check_probability(double p, const char* what) {
  TORCH_CHECK(
      p >= 0 && p <= 1,
      "resnet: ",
      what,
      " expects a probability in [0, 1], got ",
      p);
}

/// Per-image parameters drawn on the CPU, as one int64 tensor on `device`.
inline torch::Tensor to_device(
    const std::vector<int64_t>& values,
    const torch::Device& device) {
  auto t = torch::empty({static_cast<int64_t>(values.size())}, torch::kLong);
  std::copy(values.begin(), values.end(), t.data_ptr<int64_t>());
  return t.to(device);
}

/// A draw from Beta(alpha, alpha), as X / (X + Y) of two Gamma(alpha, 1).
inline double sample_beta(double alpha, std::mt19937_64& rng) {
  std::gamma_distribution<double> gamma(alpha, 1.0);
  const double a = gamma(rng);
  const double b = gamma(rng);
  return a + b > 0 ? a / (a + b) : 0.5;
}

} // namespace detail

/// Random crops of the zero-padded batch (each image shifted by up to
/// `padding` pixels each way), as torchvision's RandomCrop(size, padding)
/// per image: output pixel (y, x) of image i is pixel (y + dy_i, x + dx_i)
/// of the image padded with `fill` by `padding` on every side, with dy_i and
/// dx_i uniform in [0, 2 * padding]. Padding 0 returns `x` itself.
inline torch::Tensor random_crop(
    const torch::Tensor& x,
    int64_t padding,
    std::mt19937_64& rng,
    double fill = 0) {
  detail::check_batch(x, "random_crop");
  TORCH_CHECK(
      padding >= 0, "resnet: random_crop expects padding >= 0, got ", padding);
  if (padding == 0) {
    return x;
  }
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  std::uniform_int_distribution<int64_t> shift(0, 2 * padding);
  std::vector<int64_t> offsets(static_cast<size_t>(2 * n));
  for (auto& o : offsets) {
    o = shift(rng); // dy_0, dx_0, dy_1, dx_1, ...
  }
  const auto device = x.device();
  const auto dydx = detail::to_device(offsets, device).view({n, 2});
  const auto long_options = torch::TensorOptions(device).dtype(torch::kLong);
  const auto padded =
      torch::constant_pad_nd(x, {padding, padding, padding, padding}, fill);
  // One gather for the whole batch: [N,1,1,1], [1,C,1,1], [N,1,H,1] and
  // [N,1,1,W] indices broadcast to the output [N, C, H, W].
  const auto images = torch::arange(n, long_options).view({n, 1, 1, 1});
  const auto channels = torch::arange(c, long_options).view({1, c, 1, 1});
  const auto rows = (torch::arange(h, long_options).view({1, h}) +
                     dydx.select(1, 0).view({n, 1}))
                        .view({n, 1, h, 1});
  const auto cols = (torch::arange(w, long_options).view({1, w}) +
                     dydx.select(1, 1).view({n, 1}))
                        .view({n, 1, 1, w});
  return padded.index({images, channels, rows, cols});
}

/// Each image flipped left-right with probability p (`x` itself when none
/// is). Draws one number per image from `rng`, whatever p.
inline torch::Tensor
random_horizontal_flip(const torch::Tensor& x, double p, std::mt19937_64& rng) {
  detail::check_batch(x, "random_horizontal_flip");
  detail::check_probability(p, "random_horizontal_flip");
  const int64_t n = x.size(0);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<int64_t> flip(static_cast<size_t>(n));
  bool any = false;
  for (auto& f : flip) {
    f = unit(rng) < p ? 1 : 0;
    any = any || f != 0;
  }
  if (!any) {
    return x;
  }
  const auto mask = detail::to_device(flip, x.device()).ne(0);
  return torch::where(mask.view({n, 1, 1, 1}), x.flip({3}), x);
}

/// Options of `random_erasing`; the defaults are timm's.
struct ErasingOptions {
  /// Probability that an image gets a rectangle.
  TORCH_ARG(double, p) = 0.25;
  /// Smallest area of the rectangle, as a fraction of the image.
  TORCH_ARG(double, min_area) = 0.02;
  /// Largest area of the rectangle, as a fraction of the image.
  TORCH_ARG(double, max_area) = 0.25;
  /// Smallest aspect ratio (height / width), drawn log-uniformly.
  TORCH_ARG(double, min_aspect) = 0.3;
  /// Largest aspect ratio (height / width).
  TORCH_ARG(double, max_aspect) = 3.3;
  /// What the rectangle is set to (in every channel).
  TORCH_ARG(double, value) = 0;
};

/// Random erasing (Zhong et al. 2017), as torchvision's RandomErasing: per
/// image, with probability p, one rectangle set to `value`. Its area is
/// uniform in [min_area, max_area] of the image and its aspect ratio
/// log-uniform in [min_aspect, max_aspect], rounded to whole pixels; when
/// ten draws give no rectangle that fits, the image is left unchanged.
/// Returns `x` itself when no image is erased.
inline torch::Tensor random_erasing(
    const torch::Tensor& x,
    const ErasingOptions& options,
    std::mt19937_64& rng) {
  detail::check_batch(x, "random_erasing");
  detail::check_probability(options.p(), "random_erasing");
  TORCH_CHECK(
      options.min_area() > 0 && options.min_area() <= options.max_area() &&
          options.max_area() <= 1,
      "resnet: random_erasing expects 0 < min_area <= max_area <= 1, got ",
      options.min_area(),
      " and ",
      options.max_area());
  TORCH_CHECK(
      options.min_aspect() > 0 && options.min_aspect() <= options.max_aspect(),
      "resnet: random_erasing expects 0 < min_aspect <= max_aspect, got ",
      options.min_aspect(),
      " and ",
      options.max_aspect());
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  std::uniform_real_distribution<double> unit(0, 1);
  std::uniform_real_distribution<double> area_fraction(
      options.min_area(), options.max_area());
  std::uniform_real_distribution<double> log_aspect(
      std::log(options.min_aspect()), std::log(options.max_aspect()));
  // top, bottom, left, right per image; an empty box erases nothing.
  std::vector<int64_t> boxes(static_cast<size_t>(4 * n), 0);
  bool any = false;
  for (int64_t i = 0; i < n; ++i) {
    if (!(unit(rng) < options.p())) {
      continue;
    }
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double area = static_cast<double>(h * w) * area_fraction(rng);
      const double aspect = std::exp(log_aspect(rng));
      const auto eh =
          static_cast<int64_t>(std::llround(std::sqrt(area * aspect)));
      const auto ew =
          static_cast<int64_t>(std::llround(std::sqrt(area / aspect)));
      if (eh < 1 || ew < 1 || eh >= h || ew >= w) {
        continue;
      }
      const auto top = std::uniform_int_distribution<int64_t>(0, h - eh)(rng);
      const auto left = std::uniform_int_distribution<int64_t>(0, w - ew)(rng);
      auto* box = &boxes[static_cast<size_t>(4 * i)];
      box[0] = top;
      box[1] = top + eh;
      box[2] = left;
      box[3] = left + ew;
      any = true;
      break;
    }
  }
  if (!any) {
    return x;
  }
  const auto device = x.device();
  const auto b = detail::to_device(boxes, device).view({n, 4});
  const auto long_options = torch::TensorOptions(device).dtype(torch::kLong);
  const auto ys = torch::arange(h, long_options).view({1, h});
  const auto xs = torch::arange(w, long_options).view({1, w});
  const auto in_rows =
      ys.ge(b.select(1, 0).view({n, 1})) & ys.lt(b.select(1, 1).view({n, 1}));
  const auto in_cols =
      xs.ge(b.select(1, 2).view({n, 1})) & xs.lt(b.select(1, 3).view({n, 1}));
  const auto mask = in_rows.view({n, 1, h, 1}) & in_cols.view({n, 1, 1, w});
  return x.masked_fill(mask, options.value());
}

/// Options of `mixup_cutmix`; the defaults are timm's.
struct MixOptions {
  /// Beta(alpha, alpha) of mixup's lambda; 0: no mixup.
  TORCH_ARG(double, mixup_alpha) = 0.8;
  /// Beta(alpha, alpha) of cutmix's lambda; 0: no cutmix.
  TORCH_ARG(double, cutmix_alpha) = 1.0;
  /// Probability of mixing a batch at all.
  TORCH_ARG(double, probability) = 1.0;
  /// Probability of cutmix instead of mixup when both are on.
  TORCH_ARG(double, switch_probability) = 0.5;
  /// Label smoothing of the one-hot targets, in [0, 1).
  TORCH_ARG(double, label_smoothing) = 0.0;
};

/// A mixed batch.
struct Mixed {
  /// [N, C, H, W] the mixed images, same dtype and device as the input.
  torch::Tensor images;
  /// [N, classes] float soft targets; each row sums to 1.
  torch::Tensor targets;
  /// The weight of the batch itself (1 - lambda that of the reversed batch).
  double lambda = 1;
};

/// The one-hot targets [N, classes] with label smoothing as timm's
/// (off = smoothing / classes, on = 1 - smoothing + off), float32.
inline torch::Tensor smoothed_one_hot(
    const torch::Tensor& targets,
    int64_t classes,
    double smoothing = 0) {
  const double off = smoothing / static_cast<double>(classes);
  const double on = 1 - smoothing + off;
  auto out = torch::full(
      {targets.size(0), classes},
      off,
      torch::TensorOptions(targets.device()).dtype(torch::kFloat));
  return out.scatter_(1, targets.view({-1, 1}).to(torch::kLong), on);
}

/// timm's Mixup in batch mode: with probability `probability` the batch is
/// mixed with itself reversed (flip(0)) with one lambda from Beta(alpha,
/// alpha); mixup blends whole images, cutmix pastes a box of the reversed
/// batch of area fraction about 1 - lambda, centred uniformly at random and
/// clipped to the image, and lambda is corrected to the exact box area. The
/// targets, one-hot and smoothed, are mixed with the same lambda.
inline Mixed mixup_cutmix(
    const torch::Tensor& x,
    const torch::Tensor& targets,
    int64_t classes,
    const MixOptions& options,
    std::mt19937_64& rng) {
  detail::check_batch(x, "mixup_cutmix");
  TORCH_CHECK(
      targets.defined() && targets.dim() == 1 && targets.size(0) == x.size(0) &&
          !targets.is_floating_point() && targets.scalar_type() != torch::kBool,
      "resnet: mixup_cutmix expects integer targets [",
      x.size(0),
      "], got ",
      resnet::detail::describe(targets));
  TORCH_CHECK(
      targets.device() == x.device(),
      "resnet: mixup_cutmix expects the targets on the images' device ",
      x.device(),
      ", got ",
      targets.device());
  TORCH_CHECK(
      classes >= 1, "resnet: mixup_cutmix expects classes >= 1, got ", classes);
  TORCH_CHECK(
      options.mixup_alpha() >= 0 && options.cutmix_alpha() >= 0,
      "resnet: mixup_cutmix expects alphas >= 0, got mixup_alpha ",
      options.mixup_alpha(),
      " and cutmix_alpha ",
      options.cutmix_alpha());
  detail::check_probability(options.probability(), "mixup_cutmix");
  detail::check_probability(options.switch_probability(), "mixup_cutmix");
  TORCH_CHECK(
      options.label_smoothing() >= 0 && options.label_smoothing() < 1,
      "resnet: mixup_cutmix expects label_smoothing in [0, 1), got ",
      options.label_smoothing());
  if (targets.numel() > 0 &&
      (targets.lt(0) | targets.ge(classes)).any().item<bool>()) {
    TORCH_CHECK(
        false,
        "resnet: mixup_cutmix expects targets in [0, ",
        classes,
        "), got values from ",
        targets.min().item<int64_t>(),
        " to ",
        targets.max().item<int64_t>());
  }

  const double mixup = options.mixup_alpha(), cutmix = options.cutmix_alpha();
  std::uniform_real_distribution<double> unit(0, 1);
  double lambda = 1;
  bool use_cutmix = false;
  if ((mixup > 0 || cutmix > 0) && unit(rng) < options.probability()) {
    if (mixup > 0 && cutmix > 0) {
      use_cutmix = unit(rng) < options.switch_probability();
    } else {
      use_cutmix = cutmix > 0;
    }
    lambda = detail::sample_beta(use_cutmix ? cutmix : mixup, rng);
  }

  Mixed out;
  out.images = x;
  if (lambda != 1) {
    if (use_cutmix) {
      const int64_t h = x.size(2), w = x.size(3);
      const double ratio = std::sqrt(1 - lambda);
      const auto cut_h = static_cast<int64_t>(static_cast<double>(h) * ratio);
      const auto cut_w = static_cast<int64_t>(static_cast<double>(w) * ratio);
      const auto cy = std::uniform_int_distribution<int64_t>(0, h - 1)(rng);
      const auto cx = std::uniform_int_distribution<int64_t>(0, w - 1)(rng);
      const int64_t top = std::clamp<int64_t>(cy - cut_h / 2, 0, h);
      const int64_t bottom = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
      const int64_t left = std::clamp<int64_t>(cx - cut_w / 2, 0, w);
      const int64_t right = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
      out.images = x.clone();
      out.images.slice(2, top, bottom)
          .slice(3, left, right)
          .copy_(x.flip({0}).slice(2, top, bottom).slice(3, left, right));
      lambda = 1 -
          static_cast<double>((bottom - top) * (right - left)) /
              static_cast<double>(h * w);
    } else {
      out.images = x * lambda + x.flip({0}) * (1 - lambda);
    }
  }
  out.lambda = lambda;
  const auto one_hot =
      smoothed_one_hot(targets, classes, options.label_smoothing());
  out.targets = lambda == 1
      ? one_hot
      : one_hot * lambda + one_hot.flip({0}) * (1 - lambda);
  return out;
}

/// A training policy for small images (CIFAR, Fashion-MNIST): a random crop
/// of the zero-padded image, a horizontal flip, random erasing, then mixup or
/// cutmix when either alpha is positive.
struct AugmentOptions {
  /// Random-crop padding in pixels (0: no crop).
  TORCH_ARG(int64_t, padding) = 4;
  /// Probability of a horizontal flip (0 for digits and characters).
  TORCH_ARG(double, flip) = 0.5;
  /// Random erasing; timm's defaults (p = 0.25), `p(0)` turns it off.
  TORCH_ARG(ErasingOptions, erasing) = ErasingOptions();
  /// Mixing; off by default.
  TORCH_ARG(MixOptions, mix) = MixOptions().mixup_alpha(0).cutmix_alpha(0);
};

/// `x` [N, C, H, W] (float, normalized) and its targets [N] after the
/// policy, all on x's device: the targets as they were, or soft targets
/// [N, classes] when the batch was mixed (for `soft_cross_entropy`).
inline std::pair<torch::Tensor, torch::Tensor> augment(
    torch::Tensor x,
    torch::Tensor targets,
    int64_t classes,
    const AugmentOptions& options,
    std::mt19937_64& rng) {
  x = random_crop(x, options.padding(), rng);
  x = random_horizontal_flip(x, options.flip(), rng);
  x = random_erasing(x, options.erasing(), rng);
  const auto& mix = options.mix();
  if (mix.mixup_alpha() > 0 || mix.cutmix_alpha() > 0) {
    auto mixed = mixup_cutmix(x, targets, classes, mix, rng);
    return {mixed.images, mixed.targets};
  }
  return {x, targets};
}

} // namespace resnet::data
