#pragma once

// The learning-rate schedule: linear warm-up, then cosine decay.

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

namespace resnet {

/// Linear warm-up from `peak / warmup` to `peak` over the first `warmup`
/// steps, then a cosine decay that reaches zero after `total` steps.
struct WarmupCosine {
  /// The highest learning rate, reached at the end of the warm-up.
  double peak = 0.1;
  /// Warm-up steps; 0 starts the decay at `peak`.
  int64_t warmup = 0;
  /// Steps of the whole run, warm-up included.
  int64_t total = 1;

  /// The learning rate of optimizer step `step` (0-based).
  double operator()(int64_t step) const {
    if (step < warmup) {
      return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    }
    const double t = static_cast<double>(step - warmup) /
        static_cast<double>(std::max<int64_t>(1, total - warmup));
    return 0.5 * peak * (1 + std::cos(3.14159265358979323846 * t));
  }
};

/// Warm-up steps for a run of `total_steps`: `epochs` epochs when it is given
/// (>= 0), else one epoch but never more than a tenth of the run, so that a
/// short run is not all warm-up.
inline int64_t warmup_steps(
    std::optional<double> epochs,
    int64_t steps_per_epoch,
    int64_t total_steps) {
  if (epochs) {
    TORCH_CHECK(*epochs >= 0, "resnet: warm-up epochs must be >= 0");
    return static_cast<int64_t>(
        std::llround(*epochs * static_cast<double>(steps_per_epoch)));
  }
  return std::min(steps_per_epoch, total_steps / 10);
}

/// The schedule of a run of `epochs` epochs of `steps_per_epoch` steps
/// peaking at `peak`, its warm-up as warmup_steps chooses it
/// (`warmup_epochs` < 0: the default).
inline WarmupCosine warmup_cosine(
    double peak,
    int64_t epochs,
    int64_t steps_per_epoch,
    double warmup_epochs = -1) {
  const int64_t total = epochs * steps_per_epoch;
  const auto warmup =
      warmup_epochs < 0 ? std::nullopt : std::optional<double>(warmup_epochs);
  return {peak, warmup_steps(warmup, steps_per_epoch, total), total};
}

} // namespace resnet
