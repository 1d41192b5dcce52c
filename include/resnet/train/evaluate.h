#pragma once

// A classifier evaluated over a dataset, shared among the processes of a
// run: each evaluates its shard, the counts are summed.

#include <resnet/data/image_dataset.h>
#include <resnet/data/loader.h>
#include <resnet/train/distributed/group.h>
#include <resnet/train/metrics.h>

#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <utility>

namespace resnet {

/// The confusion matrix of a classifier over `dataset`: `logits_of(batch)`
/// gives the logits [B, classes] of each batch of a loader made with
/// `options` (in order, no shuffle) over this process's shard of the
/// dataset; the counts of all `group`'s processes are summed (every
/// process must call it). Runs without gradients; putting the model in
/// evaluation mode is the caller's part.
template <typename LogitsOf>
ConfusionMatrix evaluate(
    const data::ImageDataset& dataset,
    int64_t classes,
    data::LoaderOptions options,
    distributed::Group& group,
    LogitsOf&& logits_of) {
  torch::NoGradGuard no_grad;
  data::Loader loader(
      dataset.shard(group.rank(), group.size()), options.shuffle(false));
  loader.start_epoch(0);
  ConfusionMatrix matrix(classes);
  while (auto batch = loader.next()) {
    matrix.add(logits_of(*batch), batch->targets);
  }
  return matrix.summed_over(group);
}

} // namespace resnet
