#pragma once

// A published network by name, in one call: its weights found in (or
// fetched into) the caches Python uses, the network built for them, and
// what they say about their input and classes.
//
//   auto p = resnet::hub::pretrained("resnet50.a1_in1k");
//   auto x = resnet::preprocess(resnet::read_image("cat.jpg"),
//                               p.config.preprocess);
//   auto logits = p.model->forward(x);  // p.config.label_names[argmax]

#include <resnet/hub/download.h>
#include <resnet/hub/imagenet_classes.h>
#include <resnet/hub/registry.h>
#include <resnet/io/model_config.h>
#include <resnet/io/weights.h>
#include <resnet/model/config.h>
#include <resnet/model_config.h>

#include <c10/util/Exception.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace resnet::hub {

/// A published network: the model with its weights loaded (in evaluation
/// mode, on the CPU), its description and where the weights came from.
struct Pretrained {
  /// The network with the published weights.
  AnyResNet model = nullptr;
  /// Its architecture, classes and their names, and preprocessing:
  /// torchvision's from the registry, timm's from the repository's
  /// config.json.
  ModelConfig config;
  /// The registry's row (accuracies, source, URL or repository).
  const PublishedWeights* published = nullptr;
  /// The weights file in the cache.
  std::string file;
};

/// The description of the published weights `w`: torchvision's from the
/// registry; timm's from its repository's config.json, fetched into the
/// Hub's cache. ImageNet's class names where the weights have 1000 classes
/// and name none.
inline ModelConfig published_config(
    const PublishedWeights& w,
    const DownloadOptions& options = {}) {
  ModelConfig c;
  if (w.source == WeightsSource::TorchVision) {
    c.architecture = std::string(w.arch);
    c.num_classes = w.num_classes;
    c.input_size = w.crop;
    c.preprocess.resize(w.resize)
        .crop(w.crop)
        .interpolation(std::string(w.interpolation))
        .mean({w.mean.begin(), w.mean.end()})
        .std({w.std.begin(), w.std.end()});
  } else {
    const auto path =
        fetch_hub_file(std::string(w.hf_repo), "config.json", "main", options);
    c = read_model_config(path);
    TORCH_CHECK(
        c.architecture == w.arch,
        "resnet: ",
        path,
        " describes a ",
        c.architecture,
        ", not the ",
        w.arch,
        " that ",
        w.name,
        " names");
  }
  if (c.label_names.empty() &&
      c.num_classes == static_cast<int64_t>(kImageNetClassCount)) {
    c.label_names.assign(kImageNetClasses.begin(), kImageNetClasses.end());
  }
  return c;
}

/// The weights file of `w` in the cache, fetched if it is not there: for
/// timm, the repository's model.safetensors, or its pytorch_model.bin
/// where it has no safetensors file.
inline std::string published_weights_file(
    const PublishedWeights& w,
    const DownloadOptions& options = {}) {
  if (w.source == WeightsSource::TorchVision) {
    return fetch_torchvision(std::string(w.url), options);
  }
  const std::string repo(w.hf_repo);
  try {
    return fetch_hub_file(repo, "model.safetensors", "main", options);
  } catch (const detail::HttpError& e) {
    if (e.status() != 404) {
      throw;
    }
  } catch (const std::runtime_error&) {
    if (!options.offline && !hf_hub_offline()) {
      throw;
    }
  }
  return fetch_hub_file(repo, "pytorch_model.bin", "main", options);
}

/// The published network `name`, as torchvision ("resnet50.IMAGENET1K_V2",
/// "resnet50.DEFAULT") or timm ("resnet50.a1_in1k") names it
/// (pretrained_names() lists them; an unknown name is an error naming the
/// closest): the weights found in the cache of torch.hub or
/// huggingface_hub, or downloaded into it (download.h), loaded strictly
/// into the architecture and number of classes they were trained with.
inline Pretrained pretrained(
    std::string_view name,
    const DownloadOptions& options = {}) {
  const auto& w = weights_or_throw(name);
  Pretrained p;
  p.published = &w;
  p.config = published_config(w, options);
  p.file = published_weights_file(w, options);
  p.model = create(p.config);
  load_state_dict(*p.model, p.file);
  p.model->eval();
  return p;
}

} // namespace resnet::hub
