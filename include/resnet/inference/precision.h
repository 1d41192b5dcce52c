#pragma once

// Memory format and precision: channels_last, casting a network's floating
// state, and autocast (mixed precision) for inference and training.

#include <resnet/config.h>

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/version.h>

#include <cstdint>
#include <vector>

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
  /// Turns autocast to `dtype` (bfloat16, or float16 on CUDA) on for
  /// `device_type` (CPU or CUDA); `enabled = false` turns it off instead.
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

} // namespace resnet
