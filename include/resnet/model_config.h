#pragma once

// What a set of weights says about the network it fits: the architecture,
// the classes and their names, the input it expects and how an image becomes
// that input. timm's config.json holds the same for the Hub, and the trainer
// writes one beside its checkpoints. The network it describes:
// resnet::create(config) (model/config.h); as JSON: io/model_config.h.

#include <resnet/preprocess.h>

#include <cstdint>
#include <string>
#include <vector>

namespace resnet {

/// The description of a network and its weights.
struct ModelConfig {
  /// The architecture, a name of resnet::architectures().
  std::string architecture;
  /// Number of classes of the classifier.
  int64_t num_classes = 1000;
  /// Input channels: 3 for RGB, 1 for grayscale.
  int64_t in_channels = 3;
  /// The stem, "cifar" or "imagenet"; empty: the architecture's own.
  std::string stem;
  /// Height and width of the input the network was trained on.
  int64_t input_size = 224;
  /// How an image becomes the input.
  Preprocess preprocess;
  /// The class names in class order; may be empty.
  std::vector<std::string> label_names;
};

} // namespace resnet
