#pragma once

// Loss scaling for float16 training.

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace resnet {

/// Options of `GradScaler`; the defaults are PyTorch's.
struct GradScalerOptions {
  /// The first loss scale.
  TORCH_ARG(double, init_scale) = 65536.0;
  /// Factor applied after `growth_interval` steps without overflow.
  TORCH_ARG(double, growth_factor) = 2.0;
  /// Factor applied when gradients overflow.
  TORCH_ARG(double, backoff_factor) = 0.5;
  /// Overflow-free steps before growing the scale.
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// When false, `scale` returns the loss as is and `step` always steps.
  TORCH_ARG(bool, enabled) = true;
};

/// Dynamic loss scaling for float16 training, like `torch.amp.GradScaler`:
/// gradients of a scaled loss stay representable in float16; `step` unscales
/// them, skips the update if any is inf or NaN, and `update` adapts the scale.
///
///   optimizer.zero_grad();
///   scaler.scale(loss).backward();
///   scaler.step(optimizer);
///   scaler.update();
class GradScaler {
 public:
  /// Starts at `init_scale`; refuses options outside their ranges
  /// (growth_factor > 1, backoff_factor in (0, 1), growth_interval >= 1).
  explicit GradScaler(GradScalerOptions options = {})
      : options_(options), scale_(options.init_scale()) {
    TORCH_CHECK(
        options_.init_scale() > 0 && options_.growth_factor() > 1 &&
            options_.backoff_factor() > 0 && options_.backoff_factor() < 1 &&
            options_.growth_interval() >= 1,
        "resnet: GradScaler expects init_scale > 0, growth_factor > 1, "
        "0 < backoff_factor < 1 and growth_interval >= 1");
  }

  /// The loss times the current scale.
  torch::Tensor scale(const torch::Tensor& loss) const {
    return options_.enabled() ? loss * scale_ : loss;
  }

  /// Divides the optimizer's gradients by the scale and records whether any
  /// is inf or NaN. Call it before clipping gradients; `step` calls it if
  /// you did not.
  void unscale(torch::optim::Optimizer& optimizer) {
    if (!options_.enabled() || unscaled_) {
      return;
    }
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> flags;
    for (auto& group : optimizer.param_groups()) {
      for (auto& p : group.params()) {
        auto& g = p.mutable_grad();
        if (!g.defined()) {
          continue;
        }
        g.mul_(1.0 / scale_);
        flags.push_back(torch::isfinite(g).all().logical_not());
      }
    }
    found_inf_ = !flags.empty() && torch::stack(flags).any().item<bool>();
    unscaled_ = true;
  }

  /// Unscales if needed and steps the optimizer unless a gradient overflowed.
  /// Returns whether it stepped.
  bool step(torch::optim::Optimizer& optimizer) {
    unscale(optimizer);
    if (found_inf_) {
      return false;
    }
    optimizer.step();
    return true;
  }

  /// Backs the scale off after an overflow, grows it after `growth_interval`
  /// clean steps. Call once per iteration, after `step`.
  void update() {
    if (!options_.enabled()) {
      return;
    }
    if (found_inf_) {
      scale_ *= options_.backoff_factor();
      clean_steps_ = 0;
    } else if (++clean_steps_ == options_.growth_interval()) {
      scale_ *= options_.growth_factor();
      clean_steps_ = 0;
    }
    found_inf_ = false;
    unscaled_ = false;
  }

  /// The current loss scale.
  double get_scale() const {
    return scale_;
  }

  /// Whether the gradients seen by the last `unscale` overflowed.
  bool found_inf() const {
    return found_inf_;
  }

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t clean_steps_ = 0;
  bool found_inf_ = false;
  bool unscaled_ = false;
};

} // namespace resnet
