#pragma once

// One training step on a batch, run eagerly or replayed from a CUDA graph,
// the gradients averaged over the processes of a data-parallel run.

#include <resnet/train/cuda_graph_step.h>
#include <resnet/train/distributed/data_parallel.h>
#include <resnet/train/optim.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <utility>

namespace resnet {

/// How TrainStep runs the step.
struct TrainStepOptions {
  /// A group of processes, as `group` takes it.
  using GroupPointer = distributed::Group*;

  /// Capture the step as a CUDA graph at the first batch and replay it for
  /// every batch shaped like that one (CudaGraphTrainStep); a batch of
  /// other shapes (a shorter last batch) runs eagerly. The model and the
  /// batches must be on a CUDA device, in one process (gradients that
  /// travel between processes leave the graph).
  TORCH_ARG(bool, cuda_graph) = false;
  /// The processes of a data-parallel run (null: this one alone). With
  /// more than one, the TrainStep gives every process rank 0's weights and
  /// averages the gradients between the backward pass and the optimizer's
  /// step (DataParallel, its policy chosen for `device`).
  TORCH_ARG(GroupPointer, group) = nullptr;
  /// Where the model and the batches are; with `cuda_graph`, checked when
  /// the TrainStep is made, before any data is read.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

/// One optimizer step on a batch: the gradients zeroed, the loss function
/// (the forward pass and loss, returning the loss and the logits), the
/// backward pass, the gradients averaged over the processes of a
/// data-parallel run (`group()`), the optimizer's step. With
/// `cuda_graph()` the whole step is captured at the first batch and
/// replayed after that.
///
///   resnet::TrainStep step(*model, optimizer, loss_and_logits,
///       resnet::TrainStepOptions().group(&group).device(device));
///   auto [loss, logits] = step(images, targets);
class TrainStep {
 public:
  /// (images, targets) -> (scalar loss, output such as the logits).
  using Function = CudaGraphTrainStep::LossAndOutputFunction;

  /// The step of `optimizer` over `model`'s parameters with `function`.
  /// Throws at once when `options` ask for a CUDA graph where none can be
  /// captured (not on a GPU, several processes).
  TrainStep(
      torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      Function function,
      TrainStepOptions options = {})
      : model_(model),
        optimizer_(optimizer),
        function_(std::move(function)),
        options_(options) {
    const int64_t processes = options.group() ? options.group()->size() : 1;
    TORCH_CHECK(
        !options.cuda_graph() || processes == 1,
        "resnet: a step captured as a CUDA graph trains in one process; with ",
        processes,
        " the gradients travel between the processes outside the graph");
    TORCH_CHECK(
        !options.cuda_graph() || options.device().is_cuda(),
        "resnet: a step captured as a CUDA graph replays CUDA work, and "
        "this one runs on ",
        options.device());
    if (processes > 1) {
      parallel_ = std::make_unique<distributed::DataParallel>(
          model,
          *options.group(),
          distributed::DataParallelOptions::for_device(options.device()));
    }
  }

  /// Runs the step on a batch; returns the loss and the function's output,
  /// detached (with a CUDA graph, buffers the next step overwrites).
  std::pair<torch::Tensor, torch::Tensor> operator()(
      const torch::Tensor& images,
      const torch::Tensor& targets) {
    if (options_.cuda_graph() && !graph_) {
      graph_ = std::make_unique<CudaGraphTrainStep>(
          model_, optimizer_, function_, images, targets);
    }
    if (graph_) {
      auto loss = graph_->run(images, targets);
      return {loss, graph_->output()};
    }
    optimizer_.zero_grad();
    auto [loss, output] = function_(images, targets);
    loss.backward();
    if (parallel_) {
      parallel_->step(optimizer_);
    } else {
      optimizer_.step();
    }
    return {loss.detach(), output.defined() ? output.detach() : output};
  }

  /// The captured step, once the first batch has been seen with
  /// `cuda_graph()`; null otherwise.
  CudaGraphTrainStep* graph() const {
    return graph_.get();
  }

 private:
  torch::nn::Module& model_;
  torch::optim::Optimizer& optimizer_;
  Function function_;
  TrainStepOptions options_;
  std::unique_ptr<distributed::DataParallel> parallel_;
  std::unique_ptr<CudaGraphTrainStep> graph_;
};

} // namespace resnet
