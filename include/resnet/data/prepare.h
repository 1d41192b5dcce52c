#pragma once

// A loader's batch of 8-bit images made into a network's input: scaled to
// [0, 1], normalized per channel, augmented when training (seeded by the
// batch's place in the run), in the channels-last layout.

#include <resnet/data/augment.h>
#include <resnet/data/loader.h>
#include <resnet/data/transforms.h>

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

namespace resnet::data {

/// How a Batch becomes the network's input and targets.
struct BatchPreparation {
  /// Per-channel mean of the images scaled to [0, 1] (channel_statistics).
  std::vector<double> mean;
  /// Per-channel standard deviation, one per channel like `mean`.
  std::vector<double> std;
  /// The augmentation of training batches; none when empty.
  std::optional<AugmentOptions> augment;
  /// The number of classes (mixed batches get soft targets over them).
  int64_t classes = 0;
  /// The run's seed: a training batch is augmented with batch_seed(seed,
  /// its epoch, its index), so that a resumed run sees the same images.
  uint64_t seed = 0;
  /// The input in channels-last layout (faster on GPUs and oneDNN CPUs).
  bool channels_last = true;

  /// The input [B, C, H, W] (float32, on the batch's device) and targets
  /// of `batch`: augmented when `train`, as they were otherwise.
  std::pair<torch::Tensor, torch::Tensor> operator()(
      const Batch& batch,
      bool train) const {
    auto x = normalize(batch.images.to(torch::kFloat) / 255, mean, std);
    auto xy = std::pair(x, batch.targets);
    if (train && augment) {
      std::mt19937_64 rng(batch_seed(seed, batch.epoch, batch.index));
      xy = data::augment(x, batch.targets, classes, *augment, rng);
    }
    if (channels_last) {
      xy.first = xy.first.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    return xy;
  }
};

} // namespace resnet::data
