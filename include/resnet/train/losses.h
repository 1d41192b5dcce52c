#pragma once

// Training losses for the targets the data pipeline makes: class indices, or
// soft targets from mixing (`resnet::data::mixup_cutmix`).

#include <resnet/error.h>

#include <c10/util/Exception.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

namespace resnet {

/// Cross entropy with soft targets [N, classes] (mean over the batch), for
/// `Mixed`: mean_i sum_k -targets[i, k] * log_softmax(logits)[i, k].
inline torch::Tensor soft_cross_entropy(
    const torch::Tensor& logits,
    const torch::Tensor& soft_targets) {
  TORCH_CHECK(
      logits.defined() && logits.dim() == 2 && logits.is_floating_point(),
      "resnet: soft_cross_entropy expects float logits [N, classes], got ",
      detail::describe(logits));
  TORCH_CHECK(
      soft_targets.defined() && soft_targets.sizes() == logits.sizes(),
      "resnet: soft_cross_entropy expects soft targets ",
      logits.sizes(),
      " like the logits, got ",
      detail::describe(soft_targets));
  return -(soft_targets * torch::log_softmax(logits, 1)).sum(1).mean();
}

/// The training loss for the targets `augment` returns: cross entropy with
/// label smoothing for class indices [N], `soft_cross_entropy` for soft
/// targets [N, classes] (mixed batches, smoothed when they were mixed).
inline torch::Tensor cross_entropy(
    const torch::Tensor& logits,
    const torch::Tensor& targets,
    double label_smoothing = 0) {
  if (targets.defined() && targets.dim() == 2) {
    return soft_cross_entropy(logits, targets);
  }
  return torch::nn::functional::cross_entropy(
      logits,
      targets,
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(
          label_smoothing));
}

} // namespace resnet
