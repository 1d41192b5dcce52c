#pragma once

// The network a ModelConfig (<resnet/model_config.h>) describes.

#include <resnet/model/models.h>
#include <resnet/model/options.h>
#include <resnet/model_config.h>

namespace resnet {

/// ResNetOptions for the network `config` describes: its classes, input
/// channels and stem.
inline ResNetOptions options_for(const ModelConfig& config) {
  auto o = ResNetOptions()
               .num_classes(config.num_classes)
               .in_channels(config.in_channels);
  if (!config.stem.empty()) {
    o.stem(parse_stem(config.stem, config.input_size));
  }
  return o;
}

/// The network `config` describes, with fresh weights.
inline AnyResNet create(const ModelConfig& config) {
  return create(config.architecture, options_for(config));
}

} // namespace resnet
