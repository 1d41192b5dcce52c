#pragma once

// Memory format and precision: channels_last, casting a network's floating
// state, autocast (mixed precision) for training and inference, and loss
// scaling for float16 training.

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>
#include <torch/version.h>

#include <cmath>
#include <cstdint>
#include <vector>

// LibTorch 2.4 replaced autocast's per-device functions with ones taking the
// device type.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define RESNET_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define RESNET_AUTOCAST_BY_DEVICE_TYPE 0
#endif

namespace resnet {

/// Converts every 4-D parameter and buffer of `module` (the convolution
/// weights) to channels_last in place, keeping their identity, so that an
/// optimizer built before or after still updates them. Feed it inputs in
/// channels_last too (`x.contiguous(torch::MemoryFormat::ChannelsLast)`).
inline void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) {
      p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }
  for (auto& b : module.buffers()) {
    if (b.dim() == 4) {
      b.set_data(b.data().contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }
}

/// Casts the floating-point parameters and buffers of `module` to `dtype`,
/// leaving integer buffers (batch norm's `num_batches_tracked`) as they are,
/// unlike `Module::to(dtype)`. For pure bf16/fp16 inference; train with
/// `Autocast` instead.
inline void cast_floating(torch::nn::Module& module, torch::ScalarType dtype) {
  TORCH_CHECK(
      c10::isFloatingType(dtype),
      "resnet: cast_floating expects a floating-point dtype, got ",
      dtype);
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.is_floating_point()) {
      p.set_data(p.data().to(dtype));
    }
  }
  for (auto& b : module.buffers()) {
    if (b.is_floating_point()) {
      b.set_data(b.data().to(dtype));
    }
  }
}

/// Mixed precision in a scope, as `torch.autocast` does in Python: while it
/// lives, eligible operations on `device_type` (convolutions, linear layers)
/// run in `dtype` and precision-sensitive ones in float32. Parameters stay
/// float32, so training works as usual; wrap the forward pass and the loss,
/// not the backward pass. On the CPU, bfloat16 only. Restores the previous
/// state on destruction; nests.
///
///   {
///     resnet::Autocast autocast(torch::kCUDA, torch::kBFloat16);
///     loss = torch::cross_entropy_loss(model(x), y);
///   }
///   loss.backward();
class Autocast {
 public:
  Autocast(
      c10::DeviceType device_type,
      torch::ScalarType dtype,
      bool enabled = true)
      : device_type_(device_type) {
    TORCH_CHECK(
        device_type == c10::DeviceType::CUDA ||
            device_type == c10::DeviceType::CPU,
        "resnet: Autocast supports cpu and cuda, got ",
        device_type);
    TORCH_CHECK(
        !enabled || dtype == torch::kBFloat16 || dtype == torch::kFloat16,
        "resnet: Autocast runs in bfloat16 or float16, got ",
        dtype);
    TORCH_CHECK(
        !enabled || device_type == c10::DeviceType::CUDA ||
            dtype == torch::kBFloat16,
        "resnet: CPU autocast supports bfloat16 only, got ",
        dtype);
    previous_enabled_ = is_enabled(device_type_);
    previous_dtype_ = get_dtype(device_type_);
    set(device_type_, enabled, enabled ? dtype : previous_dtype_);
    at::autocast::increment_nesting();
  }

  ~Autocast() {
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    set(device_type_, previous_enabled_, previous_dtype_);
  }

  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

  /// Whether autocast is on for `device_type` now.
  static bool is_enabled(c10::DeviceType device_type) {
#if RESNET_AUTOCAST_BY_DEVICE_TYPE
    return at::autocast::is_autocast_enabled(device_type);
#else
    return device_type == c10::DeviceType::CUDA
        ? at::autocast::is_enabled()
        : at::autocast::is_cpu_enabled();
#endif
  }

 private:
  static torch::ScalarType get_dtype(c10::DeviceType device_type) {
#if RESNET_AUTOCAST_BY_DEVICE_TYPE
    return at::autocast::get_autocast_dtype(device_type);
#else
    return device_type == c10::DeviceType::CUDA
        ? at::autocast::get_autocast_gpu_dtype()
        : at::autocast::get_autocast_cpu_dtype();
#endif
  }

  static void
  set(c10::DeviceType device_type, bool enabled, torch::ScalarType dtype) {
#if RESNET_AUTOCAST_BY_DEVICE_TYPE
    at::autocast::set_autocast_dtype(device_type, dtype);
    at::autocast::set_autocast_enabled(device_type, enabled);
#else
    if (device_type == c10::DeviceType::CUDA) {
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(enabled);
    } else {
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(enabled);
    }
#endif
  }

  c10::DeviceType device_type_;
  bool previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kFloat32;
};

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
