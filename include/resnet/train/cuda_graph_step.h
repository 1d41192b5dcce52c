#pragma once

// A whole training step (loss, backward pass, optimizer step) captured as a
// CUDA graph and replayed: one launch per step instead of one per kernel.
// Without CUDA (`RESNET_WITH_CUDA` in <resnet/config.h>) it still compiles
// and its constructor throws.

#include <resnet/config.h>
#include <resnet/inference/cuda_graph.h>
#include <resnet/train/optim.h>

#include <ATen/autocast_mode.h>
#include <c10/util/Exception.h>
#include <c10/util/ScopeExit.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>
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

/// One training step (the loss of a batch, its backward pass and the
/// optimizer's step) captured as a CUDA graph for a fixed batch shape, then
/// replayed for each batch copied into its static buffers: one launch per
/// step. Gradients live in the graph: each replay overwrites them.
///
/// Building it trains nothing: the warm-up steps it runs before the capture
/// are undone (parameters, buffers and the optimizer's momentum put back;
/// momentum the warm-up made restarts at zero, where a first step finds
/// none). What the step reads on the host is frozen at capture (autocast's
/// state, the optimizer's options) except `resnet::ForeachSGD`'s learning
/// rates, which each replay takes from the options, so that a schedule
/// (`set_learning_rate`) works (the captured step reads them from tensors;
/// the optimizer's eager steps still take them as numbers); with
/// `torch::optim::SGD` a changed rate is refused. Only SGD-family
/// optimizers are taken: an Adam step counts its steps on the host, which a
/// replay would not advance. float16 loss scaling (`GradScaler`) reads the
/// gradients on the host and cannot be captured; bfloat16 autocast can.
///
///   resnet::CudaGraphTrainStep step(*model, optimizer,
///       [&](const torch::Tensor& x, const torch::Tensor& y) {
///         return torch::cross_entropy_loss(model->forward(x), y);
///       }, images, targets);
///   for (...) { auto loss = step(images, targets); }  // loss: overwritten
///
/// A function that returns the loss and an output (the logits, say) as a
/// pair has the output kept too: `output()` after each call.
class CudaGraphTrainStep {
 public:
  /// The forward pass and loss: (images, targets) -> scalar loss.
  using LossFunction =
      std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;
  /// The forward pass and loss with an output kept: (images, targets) ->
  /// (scalar loss, output).
  using LossAndOutputFunction =
      std::function<std::pair<torch::Tensor, torch::Tensor>(
          const torch::Tensor&,
          const torch::Tensor&)>;

  /// Runs `warmup` steps on a side stream (cuDNN picks its algorithms, the
  /// optimizer makes its state), captures one, then puts back what the
  /// warm-up changed in `model` (the network `loss` trains) and in
  /// `optimizer`.
  CudaGraphTrainStep(
      torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      const LossFunction& loss,
      const torch::Tensor& images,
      const torch::Tensor& targets,
      int warmup = 3)
      : CudaGraphTrainStep(
            model,
            optimizer,
            LossAndOutputFunction(
                [loss](const torch::Tensor& x, const torch::Tensor& y) {
                  return std::make_pair(loss(x, y), torch::Tensor());
                }),
            images,
            targets,
            warmup) {}

  /// The same for a function that returns the loss and an output, which
  /// `output()` returns after each call.
  CudaGraphTrainStep(
      torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      LossAndOutputFunction loss,
      const torch::Tensor& images,
      const torch::Tensor& targets,
      int warmup = 3)
      : optimizer_(optimizer), function_(loss) {
    TORCH_CHECK(
        images.defined() && targets.defined(),
        "resnet: CudaGraphTrainStep needs example images and targets");
    auto* sgd = dynamic_cast<torch::optim::SGD*>(&optimizer);
    TORCH_CHECK(
        sgd != nullptr,
        "resnet: CudaGraphTrainStep captures SGD steps only (torch::optim::SGD, "
        "resnet::ForeachSGD); an Adam step counts steps on the host, which a "
        "replayed graph would not advance");
#if RESNET_WITH_CUDA
    TORCH_CHECK(
        images.is_cuda() && targets.device() == images.device(),
        "resnet: CudaGraphTrainStep captures CUDA work; images are on ",
        images.device(),
        " and targets on ",
        targets.device());
    TORCH_CHECK(warmup >= 1, "resnet: CudaGraphTrainStep needs warmup >= 1");
    const auto device = images.device();
    c10::cuda::CUDAGuard device_guard(device);
    foreach_sgd_ = dynamic_cast<ForeachSGD*>(&optimizer);
    // A ForeachSGD reads its learning rates from tensors for the warm-up and
    // the capture only: its eager steps between replays take them as
    // numbers again, as before.
    const bool read_tensors = foreach_sgd_ != nullptr &&
        foreach_sgd_->reads_learning_rates_from_tensors();
    if (foreach_sgd_ != nullptr) {
      foreach_sgd_->read_learning_rates_from_tensors(true);
    }
    const auto put_back_rates = c10::make_scope_exit([this, read_tensors] {
      if (foreach_sgd_ != nullptr) {
        foreach_sgd_->read_learning_rates_from_tensors(read_tensors);
      }
    });
    captured_rates_ = learning_rates(optimizer_);
    WarmupUndo undo(model, *sgd);
    images_ = images.clone(torch::MemoryFormat::Preserve);
    targets_ = targets.clone(torch::MemoryFormat::Preserve);
    graph_ = std::make_unique<at::cuda::CUDAGraph>();
    torch::cuda::synchronize(device.index());
    auto stream = c10::cuda::getStreamFromPool(
        /*isHighPriority=*/false, device.index());
    {
      c10::cuda::CUDAStreamGuard stream_guard(stream);
      for (int i = 0; i < warmup; ++i) {
        clear_gradients(optimizer_);
        step(loss);
      }
      stream.synchronize();
      // Gradients made during the capture come from the graph's memory and
      // are written, not accumulated, by every replay.
      clear_gradients(optimizer_);
      // Casts cached by autocast during the capture would be freed when it
      // ends; the graph must recompute them on every replay.
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      try {
        graph_->capture_begin();
        std::tie(loss_, output_) = step(loss);
        graph_->capture_end();
      } catch (...) {
        at::autocast::set_autocast_cache_enabled(cache);
        throw;
      }
      at::autocast::set_autocast_cache_enabled(cache);
    }
    torch::cuda::synchronize(device.index());
    undo.restore();
    torch::cuda::synchronize(device.index());
#else
    (void)model;
    (void)loss;
    (void)warmup;
    TORCH_CHECK(
        false,
        "resnet: CudaGraphTrainStep needs CUDA, and this program was built "
        "without it (a CPU-only LibTorch, no CUDA toolkit headers, or "
        "RESNET_NO_CUDA)");
#endif
  }

  /// Copies the batch into the static buffers, replays the step and returns
  /// the loss (a buffer that the next call overwrites).
  torch::Tensor operator()(
      const torch::Tensor& images,
      const torch::Tensor& targets) {
    detail::check_captured_like(
        images, images_, "CudaGraphTrainStep", "images ");
    detail::check_captured_like(
        targets, targets_, "CudaGraphTrainStep", "targets ");
    {
      torch::NoGradGuard no_grad;
      images_.copy_(images);
      targets_.copy_(targets);
    }
    replay();
    eager_last_ = false;
    return loss_;
  }

  /// One step on any batch: replayed from the graph when the batch has the
  /// captured shapes, dtypes and device; run eagerly otherwise (a shorter
  /// last batch of an epoch): the same function, backward pass and
  /// optimizer step, with the gradients zeroed in place first (the graph
  /// keeps writing into them). Returns the loss; `output()` is the output
  /// of whichever ran.
  torch::Tensor run(const torch::Tensor& images, const torch::Tensor& targets) {
    if (detail::captured_like(images, images_) &&
        detail::captured_like(targets, targets_)) {
      return (*this)(images, targets);
    }
    clear_gradients(optimizer_);
    auto [loss, output] = function_(images, targets);
    loss.backward();
    optimizer_.step();
    eager_output_ = output.defined() ? output.detach() : output;
    eager_last_ = true;
    return loss.detach();
  }

  /// The output the function returned with the loss (undefined for a
  /// function that returns only the loss), from the last call, replay or
  /// eager step: a buffer that the next one overwrites.
  const torch::Tensor& output() const {
    return eager_last_ ? eager_output_ : output_;
  }

  /// Replays the step on whatever the static buffers hold, with the
  /// optimizer's learning rates as they are now.
  void replay() {
    if (foreach_sgd_ != nullptr) {
      foreach_sgd_->copy_learning_rates_to_tensors();
    } else {
      TORCH_CHECK(
          learning_rates(optimizer_) == captured_rates_,
          "resnet: CudaGraphTrainStep froze torch::optim::SGD's learning "
          "rate at capture and it has changed since; use resnet::ForeachSGD "
          "for a schedule");
    }
#if RESNET_WITH_CUDA
    graph_->replay();
#endif
  }

  /// The static input buffers; writing them and calling `replay()` avoids a
  /// copy.
  const torch::Tensor& images() const {
    return images_;
  }
  /// The static targets buffer, the counterpart of `images()`.
  const torch::Tensor& targets() const {
    return targets_;
  }

 private:
  std::pair<torch::Tensor, torch::Tensor> step(
      const LossAndOutputFunction& loss_function) {
    auto [loss, output] = loss_function(images_, targets_);
    loss.backward();
    optimizer_.step();
    return {loss.detach(), output.defined() ? output.detach() : output};
  }

  // Copies of what warm-up steps change, put back by restore(): the
  // network's parameters and buffers and the optimizer's momentum buffers.
  class WarmupUndo {
   public:
    WarmupUndo(torch::nn::Module& model, torch::optim::SGD& sgd) : sgd_(sgd) {
      torch::NoGradGuard no_grad;
      for (auto& t : model.parameters()) {
        keep(t);
      }
      for (auto& t : model.buffers()) {
        keep(t);
      }
      auto& state = sgd_.state();
      for (auto& group : sgd_.param_groups()) {
        const auto& o =
            static_cast<const torch::optim::SGDOptions&>(group.options());
        for (auto& p : group.params()) {
          const auto found = state.find(detail::optimizer_state_key(state, p));
          if (found != state.end()) {
            keep(static_cast<torch::optim::SGDParamState&>(*found->second)
                     .momentum_buffer());
          } else if (o.momentum() != 0) {
            // A first step copies the gradient into the buffer; one that
            // exists and holds zeros gives the same only without dampening.
            TORCH_CHECK(
                o.dampening() == 0,
                "resnet: CudaGraphTrainStep cannot capture a first SGD step "
                "with dampening ",
                o.dampening(),
                "; take one eager step first");
            fresh_.push_back(p);
          }
        }
      }
    }

    void restore() {
      torch::NoGradGuard no_grad;
      for (auto& [target, copy] : kept_) {
        target.copy_(copy);
      }
      auto& state = sgd_.state();
      for (const auto& p : fresh_) {
        const auto found = state.find(detail::optimizer_state_key(state, p));
        if (found != state.end()) {
          static_cast<torch::optim::SGDParamState&>(*found->second)
              .momentum_buffer()
              .zero_();
        }
      }
    }

   private:
    void keep(const torch::Tensor& t) {
      if (t.defined()) {
        kept_.emplace_back(t, t.clone(torch::MemoryFormat::Preserve));
      }
    }

    torch::optim::SGD& sgd_;
    std::vector<std::pair<torch::Tensor, torch::Tensor>> kept_;
    std::vector<torch::Tensor> fresh_; // parameters without momentum yet
  };

  torch::optim::Optimizer& optimizer_;
  ForeachSGD* foreach_sgd_ = nullptr;
  std::vector<double> captured_rates_;
  torch::Tensor images_;
  torch::Tensor targets_;
  torch::Tensor loss_;
  torch::Tensor output_;
  LossAndOutputFunction function_;
  torch::Tensor eager_output_;
  bool eager_last_ = false;
#if RESNET_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
#endif
};

} // namespace resnet
