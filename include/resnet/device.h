#pragma once

// Choosing the device to run on.

#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

namespace resnet {

/// Parses a device name as LibTorch does ("cpu", "cuda", "cuda:1") and checks
/// that it can be used here.
inline c10::Device parse_device(const std::string& name) {
  c10::optional<c10::Device> device;
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    TORCH_CHECK(
        false,
        "resnet: unknown device '",
        name,
        "'; expected cpu, cuda or cuda:N");
  }
  if (device->is_cuda()) {
    TORCH_CHECK(
        torch::cuda::is_available(),
        "resnet: device '",
        name,
        "' requested but LibTorch sees no CUDA device");
    const auto count = static_cast<int>(torch::cuda::device_count());
    TORCH_CHECK(
        !device->has_index() || device->index() < count,
        "resnet: device '",
        name,
        "' requested but only ",
        count,
        " CUDA device(s) are visible");
  } else {
    TORCH_CHECK(
        device->is_cpu(),
        "resnet: unsupported device '",
        name,
        "'; expected cpu, cuda or cuda:N");
  }
  return *device;
}

/// The device to run on: the one named by the environment variable
/// `RESNET_DEVICE` if set (e.g. `RESNET_DEVICE=cpu`), else CUDA when LibTorch
/// sees a GPU, else the CPU.
inline c10::Device default_device() {
  if (const char* env = std::getenv("RESNET_DEVICE"); env && *env) {
    return parse_device(env);
  }
  return torch::cuda::is_available() ? c10::Device(c10::kCUDA)
                                     : c10::Device(c10::kCPU);
}

/// The number of CPU threads for LibTorch's operators: `requested` when it
/// is positive, else the environment variable `OMP_NUM_THREADS` when it holds
/// a positive number, else every core.
inline int default_num_threads(int requested = 0) {
  if (requested > 0) {
    return requested;
  }
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && *env) {
    if (const int n = std::atoi(env); n > 0) {
      return n;
    }
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// Sets LibTorch's operator threads to `default_num_threads(requested)` and
/// returns that number.
inline int set_num_threads(int requested = 0) {
  const int n = default_num_threads(requested);
  at::set_num_threads(n);
  return n;
}

} // namespace resnet
