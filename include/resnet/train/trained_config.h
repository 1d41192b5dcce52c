#pragma once

// The description of the weights a training run writes (config.json beside
// best.pt and last.pt), so that they are used as they were trained:
// classify reads it, as it reads timm's config.json on the Hub.

#include <resnet/data/image_dataset.h>
#include <resnet/data/prepare.h>
#include <resnet/model/options.h>
#include <resnet/model_config.h>

#include <algorithm>
#include <string>

namespace resnet {

/// The ModelConfig of a network `arch` built with `options` and trained on
/// `train`: its classes and their names, its input channels and size, and
/// the mean and std `prepare` normalized the images with. An image is
/// resized so that its shorter side is the training size, then cropped to
/// a square of that size.
inline ModelConfig trained_config(
    const std::string& arch,
    const ResNetOptions& options,
    const data::ImageDataset& train,
    const data::BatchPreparation& prepare) {
  ModelConfig c;
  c.architecture = arch;
  c.num_classes = options.num_classes();
  c.in_channels = options.in_channels();
  c.stem = to_string(options.stem());
  c.input_size = std::min(train.height(), train.width());
  c.preprocess.resize(c.input_size)
      .crop(c.input_size)
      .mean(prepare.mean)
      .std(prepare.std);
  c.label_names = train.classes();
  return c;
}

} // namespace resnet
