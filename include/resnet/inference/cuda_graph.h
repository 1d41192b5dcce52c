#pragma once

// Fixed-shape inference by replaying a captured CUDA graph: one launch per
// forward pass instead of one per kernel. Without CUDA (`RESNET_WITH_CUDA`
// in <resnet/config.h>) the runner still compiles and its constructor
// throws, so code using it builds everywhere.

#include <resnet/config.h>

#include <ATen/autocast_mode.h>
#include <c10/util/Exception.h>
#include <c10/util/ScopeExit.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#if RESNET_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#endif

namespace resnet {

namespace detail {

// Whether `x` fits the static buffer a graph was captured with: the same
// shape, dtype and device.
inline bool captured_like(const torch::Tensor& x, const torch::Tensor& buffer) {
  return x.defined() && x.sizes() == buffer.sizes() &&
      x.scalar_type() == buffer.scalar_type() && x.device() == buffer.device();
}

// Refuses an input that does not fit the static buffer a graph was captured
// with (shape, dtype, device), naming both.
inline void check_captured_like(
    const torch::Tensor& x,
    const torch::Tensor& buffer,
    const char* who,
    const char* what) {
  TORCH_CHECK(
      captured_like(x, buffer),
      "resnet: ",
      who,
      " was captured for ",
      what,
      buffer.scalar_type(),
      " ",
      buffer.sizes(),
      " on ",
      buffer.device(),
      ", got ",
      x.defined() ? x.toString() : std::string("an undefined tensor"),
      " ",
      x.defined() ? x.sizes() : torch::IntArrayRef{},
      x.defined() ? " on " + x.device().str() : std::string());
}

} // namespace detail

/// Captures `fn` applied to a static input buffer shaped like `example` as a
/// CUDA graph, then runs it by copying each new input into that buffer and
/// replaying the graph. Inputs must keep the example's shape, dtype, device
/// and memory format; the model must not change between calls (weights may
/// be updated in place).
///
///   auto fused = resnet::fuse_for_inference(*model);
///   resnet::CudaGraphRunner runner(
///       [&](const torch::Tensor& x) { return fused(x); }, example);
///   auto logits = runner(images);  // overwritten by the next call
class CudaGraphRunner {
 public:
  /// What is captured: a model's forward pass, input to output.
  using Function = std::function<torch::Tensor(const torch::Tensor&)>;

  /// Runs `fn` `warmup` times on a side stream (cuDNN picks its algorithms,
  /// the caching allocator fills), then captures one call. Runs in
  /// inference mode.
  CudaGraphRunner(Function fn, const torch::Tensor& example, int warmup = 3) {
    TORCH_CHECK(
        example.defined(), "resnet: CudaGraphRunner needs an example input");
#if RESNET_WITH_CUDA
    TORCH_CHECK(
        example.is_cuda(),
        "resnet: CudaGraphRunner captures CUDA work; the example input is on ",
        example.device());
    TORCH_CHECK(warmup >= 1, "resnet: CudaGraphRunner needs warmup >= 1");
    c10::InferenceMode inference;
    c10::cuda::CUDAGuard device_guard(example.device());
    input_ = example.clone(torch::MemoryFormat::Preserve);
    graph_ = std::make_unique<at::cuda::CUDAGraph>();
    // Capture must happen off the default stream; make the side stream wait
    // for everything queued so far.
    torch::cuda::synchronize(example.device().index());
    auto stream = c10::cuda::getStreamFromPool(
        /*isHighPriority=*/false, example.device().index());
    {
      c10::cuda::CUDAStreamGuard stream_guard(stream);
      for (int i = 0; i < warmup; ++i) {
        fn(input_);
      }
      stream.synchronize();
      graph_->capture_begin();
      output_ = fn(input_);
      graph_->capture_end();
    }
    torch::cuda::synchronize(example.device().index());
#else
    (void)fn;
    (void)warmup;
    TORCH_CHECK(
        false,
        "resnet: CudaGraphRunner needs CUDA, and this program was built without "
        "it (a CPU-only LibTorch, no CUDA toolkit headers, or RESNET_NO_CUDA)");
#endif
  }

  /// Copies `x` into the captured input, replays the graph and returns the
  /// captured output, which the next call overwrites (clone it to keep it).
  torch::Tensor operator()(const torch::Tensor& x) {
    detail::check_captured_like(x, input_, "CudaGraphRunner", "");
    c10::InferenceMode inference;
    input_.copy_(x);
    replay();
    return output_;
  }

  /// Replays the graph on whatever the input buffer holds.
  void replay() {
#if RESNET_WITH_CUDA
    graph_->replay();
#endif
  }

  /// The captured input buffer; writing it and calling `replay()` avoids a
  /// copy.
  const torch::Tensor& input() const {
    return input_;
  }

  /// The captured output buffer.
  const torch::Tensor& output() const {
    return output_;
  }

 private:
  torch::Tensor input_;
  torch::Tensor output_;
#if RESNET_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
#endif
};

} // namespace resnet
