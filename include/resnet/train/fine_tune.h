#pragma once

// Fine-tuning: a network started from weights trained for another task (a
// published network by name, or a weights file), with a new classifier, an
// input adapted to the data's channels, parts of it frozen and the
// pretrained layers learning more slowly than the new classifier.

#include <resnet/data/prepare.h>
#include <resnet/io/model_config.h>
#include <resnet/io/state_dict.h>
#include <resnet/io/weights.h>
#include <resnet/model/config.h>
#include <resnet/model/network.h>
#include <resnet/model/options.h>
#include <resnet/model_config.h>
#if RESNET_WITH_HUB
#include <resnet/hub/pretrained.h>
#endif

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace resnet {

/// How a network is fine-tuned.
struct FineTuneOptions {
  /// What keeps its pretrained weights: "none"; "stem" (the layers before
  /// layer1); "1" to "4" (the stem and that many stages); "backbone"
  /// (everything but the classifier). Frozen layers' batch norms keep
  /// their statistics too.
  TORCH_ARG(std::string, freeze) = "none";
  /// The learning rate of the pretrained layers, as a factor of the
  /// classifier's (timm's and torchvision's recipes use 0.1 or so).
  TORCH_ARG(double, backbone_lr) = 1.0;
};

/// The names FineTuneOptions::freeze takes.
inline const std::vector<std::string>& freeze_choices() {
  static const std::vector<std::string> choices = {
      "none", "stem", "1", "2", "3", "4", "backbone"};
  return choices;
}

/// What fine_tune did, and what training needs from it.
struct FineTune {
  /// Where the weights came from (a file, or the file of a published name).
  std::string source;
  /// The weights' own description where they have one (a published name, a
  /// config.json beside the file): their preprocessing, mean and std.
  std::optional<ModelConfig> config;
  /// Entries of the weights left out: the classifier of another number of
  /// classes.
  std::vector<std::string> skipped;
  /// Entries adapted to the data, e.g. the first convolution's filters
  /// summed over RGB for grayscale input.
  std::vector<std::string> adapted;
  /// Parameters that keep their weights.
  std::vector<std::string> frozen;
  /// The learning-rate factor of each of groups()'s groups.
  std::vector<double> lr_factors = {1.0};
  /// The backbone's learning-rate factor (FineTuneOptions::backbone_lr).
  double backbone_lr = 1.0;

  /// The optimizer's parameter groups of `model`: the classifier's (factor
  /// 1) and, with a backbone factor other than 1, the rest apart; frozen
  /// parameters left out. Without fine-tuning, one group of every
  /// parameter.
  std::vector<torch::optim::OptimizerParamGroup> groups(
      torch::nn::Module& model) const {
    std::vector<torch::Tensor> head, body;
    for (const auto& item : model.named_parameters()) {
      if (!item.value().requires_grad()) {
        continue;
      }
      const bool classifier = item.key().rfind("fc.", 0) == 0;
      (classifier || backbone_lr == 1.0 ? head : body).push_back(item.value());
    }
    std::vector<torch::optim::OptimizerParamGroup> out;
    out.emplace_back(head);
    if (!body.empty()) {
      out.emplace_back(body);
    }
    return out;
  }

  /// The per-channel mean and std of the weights' preprocessing for input
  /// of `channels` channels (RGB's averaged for one channel); nullopt when
  /// the weights do not say.
  std::optional<std::pair<std::vector<double>, std::vector<double>>>
  normalization(int64_t channels) const {
    if (!config) {
      return std::nullopt;
    }
    auto mean = config->preprocess.mean(), std = config->preprocess.std();
    if (static_cast<int64_t>(mean.size()) != channels) {
      double m = 0, s = 0;
      for (size_t i = 0; i < mean.size(); ++i) {
        m += mean[i] / static_cast<double>(mean.size());
        s += std[i] / static_cast<double>(std.size());
      }
      mean.assign(static_cast<size_t>(channels), m);
      std.assign(static_cast<size_t>(channels), s);
    }
    return std::pair(mean, std);
  }

  /// Makes `prepare` normalize with `mean` and `std` where they are given
  /// (one value for every channel, or one per channel), else with the
  /// weights' (normalization()) where they say; otherwise `prepare` keeps
  /// its own (the dataset's).
  void normalize(
      data::BatchPreparation& prepare,
      std::vector<double> mean = {},
      std::vector<double> std = {}) const {
    const auto channels = static_cast<int64_t>(prepare.mean.size());
    if (const auto n = normalization(channels)) {
      mean = mean.empty() ? n->first : mean;
      std = std.empty() ? n->second : std;
    }
    const auto fit = [channels](std::vector<double>& v, const char* what) {
      if (v.size() == 1) {
        v.assign(static_cast<size_t>(channels), v.front());
      }
      TORCH_CHECK(
          v.empty() || static_cast<int64_t>(v.size()) == channels,
          "resnet: the ",
          what,
          " has ",
          v.size(),
          " values for images of ",
          channels,
          " channels (give one, or one per channel)");
    };
    fit(mean, "mean");
    fit(std, "std");
    for (const double s : std) {
      TORCH_CHECK(
          s > 0 && std::isfinite(s), "resnet: a std must be > 0, got ", s);
    }
    prepare.mean = mean.empty() ? prepare.mean : mean;
    prepare.std = std.empty() ? prepare.std : std;
  }

  /// "fine-tuning from SOURCE" and what was skipped, adapted and frozen, a
  /// line each, for a log; empty without fine-tuning.
  std::string describe() const {
    if (source.empty()) {
      return "";
    }
    std::ostringstream o;
    o << "fine-tuning from " << source;
    const auto list = [&o](const char* what, const auto& names) {
      if (names.empty()) {
        return;
      }
      o << "\n  " << what << ": ";
      for (size_t i = 0; i < names.size() && i < 8; ++i) {
        o << (i ? ", " : "") << names[i];
      }
      o << (names.size() > 8 ? ", ..." : "") << " (" << names.size() << ")";
    };
    list("skipped (new classifier)", skipped);
    list("adapted", adapted);
    list("frozen", frozen);
    if (backbone_lr != 1.0) {
      o << "\n  pretrained layers at " << backbone_lr << "x the learning rate";
    }
    o << "\n";
    return o.str();
  }
};

namespace detail {

// Whether parameter `name` is frozen by `freeze` (see FineTuneOptions).
inline bool frozen_by(const std::string& name, const std::string& freeze) {
  if (freeze == "none" || name.rfind("fc.", 0) == 0) {
    return false;
  }
  if (freeze == "backbone") {
    return true;
  }
  if (name.rfind("layer", 0) != 0) {
    return true; // the stem
  }
  const int stages = freeze == "stem" ? 0 : std::stoi(freeze);
  return name.size() > 5 && name[5] - '0' >= 1 && name[5] - '0' <= stages;
}

// The filters of a first convolution [O, 3, kh, kw] for `channels` input
// channels, as timm's adapt_input_conv does: summed over RGB for one
// channel; repeated and scaled by 3 / channels for more.
inline torch::Tensor adapt_input_channels(
    const torch::Tensor& weight,
    int64_t channels) {
  if (channels == 1) {
    return weight.sum(1, true);
  }
  const int64_t have = weight.size(1);
  const int64_t repeat = (channels + have - 1) / have;
  return weight.repeat({1, repeat, 1, 1})
      .narrow(1, 0, channels)
      .mul(static_cast<double>(have) / static_cast<double>(channels));
}

} // namespace detail

namespace detail {

// Whether `source` names a weights file rather than a published name: a
// path, a weights file's extension, or a file that is there.
inline bool names_weights_file(const std::string& source) {
  const auto extension = std::filesystem::path(source).extension();
  return source.find('/') != std::string::npos || extension == ".pt" ||
      extension == ".pth" || extension == ".bin" ||
      extension == ".safetensors" || std::filesystem::exists(source);
}

// The description of the weights `source` (a file, which must be there, or
// a published name) and the file that holds them: for a file, itself and
// the config.json beside it if any; for a name, its published description
// and, with `fetch`, its file in the cache (fetched if need be).
inline std::pair<std::string, std::optional<ModelConfig>> weights_source(
    const std::string& source,
    bool fetch) {
  if (names_weights_file(source)) {
    TORCH_CHECK(
        std::filesystem::is_regular_file(source),
        "resnet: there is no weights file '",
        source,
        "'");
    return {source, find_model_config(source)};
  }
#if RESNET_WITH_HUB
  const auto& w = hub::weights_or_throw(source);
  auto config = hub::published_config(w);
  return {fetch ? hub::published_weights_file(w) : "", std::move(config)};
#else
  (void)fetch;
  TORCH_CHECK(
      false,
      "resnet: '",
      source,
      "' is neither a weights file nor, without resnet::hub, a published ",
      "name");
#endif
}

} // namespace detail

/// The network to train: its architecture and stem.
struct NetworkChoice {
  /// A name of resnet::architectures().
  std::string architecture;
  /// The stem.
  Stem stem = Stem::ImageNet;
};

/// The network to train on images of `image_size` pixels, starting from
/// the weights `pretrained` (a file or a published name; empty: none).
/// `architecture` and `stem` ("cifar", "imagenet" or "auto") are kept where
/// given; left to choose (an empty architecture, "auto"), they are the
/// weights': those their description names (a published name's, the
/// config.json beside a file), the stem also told from a file's first
/// convolution (7x7: the ImageNet stem, 3x3: CIFAR's). Otherwise
/// `fallback` and the stem for the image size (stem_for_image_size).
inline NetworkChoice choose_network(
    const std::string& architecture,
    const std::string& stem,
    const std::string& pretrained,
    int64_t image_size,
    const std::string& fallback = "resnet20") {
  NetworkChoice c{architecture, parse_stem(stem, image_size)};
  std::optional<std::string> weights_stem;
  if (!pretrained.empty() && (architecture.empty() || stem == "auto")) {
    const auto [file, config] = detail::weights_source(pretrained, false);
    if (config) {
      c.architecture =
          architecture.empty() ? config->architecture : architecture;
      weights_stem = config->stem.empty()
          ? std::string(to_string(options_for(*config).stem()))
          : config->stem;
    } else if (!file.empty()) {
      for (const auto& [name, tensor] : read_state_dict(file)) {
        if (name == "conv1.weight" && tensor.dim() == 4 &&
            (tensor.size(3) == 7 || tensor.size(3) == 3)) {
          weights_stem = tensor.size(3) == 7 ? "imagenet" : "cifar";
        }
      }
    }
  }
  if (stem == "auto" && weights_stem) {
    c.stem = parse_stem(*weights_stem, image_size);
  }
  if (c.architecture.empty()) {
    c.architecture = fallback;
  }
  return c;
}

/// Starts `model` from the weights `source`: a weights file of any kind
/// load_state_dict reads (its config.json, if any, beside it), or a
/// published name (resnet::hub::pretrained_names(); with resnet::hub). The
/// classifier (fc.*) is kept where its shape fits and left new otherwise;
/// a convolution whose filters were made for other input channels (3 for
/// RGB, and grayscale data) is adapted (detail::adapt_input_channels); any
/// other difference is an error, as in a strict load. Then the parameters
/// `options.freeze()` names stop learning. Returns what it did and the
/// optimizer's groups.
inline FineTune fine_tune(
    torch::nn::Module& model,
    const std::string& source,
    const FineTuneOptions& options = {}) {
  const auto& choices = freeze_choices();
  TORCH_CHECK(
      std::find(choices.begin(), choices.end(), options.freeze()) !=
          choices.end(),
      "resnet: fine_tune: freeze is none, stem, 1 to 4 or backbone, not '",
      options.freeze(),
      "'");
  TORCH_CHECK(
      options.backbone_lr() >= 0,
      "resnet: fine_tune: backbone_lr must be >= 0, got ",
      options.backbone_lr());
  FineTune tune;
  std::string file;
  std::tie(file, tune.config) = detail::weights_source(source, true);
  tune.source = file == source ? source : source + " (" + file + ")";
  std::map<std::string, torch::Tensor> mine;
  for (const auto& item : model.named_parameters()) {
    mine[item.key()] = item.value();
  }
  for (const auto& item : model.named_buffers()) {
    mine[item.key()] = item.value();
  }
  StateDict weights;
  for (auto& [name, tensor] : read_state_dict(file)) {
    const auto it = mine.find(name);
    if (it == mine.end() || it->second.sizes() == tensor.sizes()) {
      weights.emplace_back(name, tensor);
    } else if (name.rfind("fc.", 0) == 0) {
      tune.skipped.push_back(name);
    } else if (
        tensor.dim() == 4 && it->second.dim() == 4 &&
        tensor.size(0) == it->second.size(0) &&
        tensor.size(2) == it->second.size(2) &&
        tensor.size(3) == it->second.size(3)) {
      const int64_t channels = it->second.size(1);
      tune.adapted.push_back(
          name + " " + std::to_string(tensor.size(1)) + " -> " +
          std::to_string(channels) + " input channels");
      weights.emplace_back(
          name, detail::adapt_input_channels(tensor, channels));
    } else {
      weights.emplace_back(name, tensor); // the load names the mismatch
    }
  }
  auto load = LoadOptions();
  if (!tune.skipped.empty()) {
    load.skip_prefixes({"fc."});
  }
  load_state_dict(model, weights, load, "'" + file + "'");
  for (auto& item : model.named_parameters()) {
    if (detail::frozen_by(item.key(), options.freeze())) {
      item.value().requires_grad_(false);
      tune.frozen.push_back(item.key());
    }
  }
  tune.backbone_lr = options.backbone_lr();
  if (tune.backbone_lr != 1.0) {
    tune.lr_factors = {1.0, tune.backbone_lr};
  }
  return tune;
}

/// Training mode for `model`, except for the batch norms whose statistics
/// stay as they are: all of them with `freeze_batch_norm`, and those of
/// frozen layers (weights that require no gradient) in any case.
inline void train_mode(torch::nn::Module& model, bool freeze_batch_norm) {
  model.train();
  for (const auto& m : model.modules(false)) {
    const auto name = m->name();
    if (name.find("BatchNorm") == std::string::npos) {
      continue;
    }
    const auto params = m->parameters(false);
    const bool frozen = !params.empty() && !params.front().requires_grad();
    if (freeze_batch_norm || frozen) {
      m->eval();
    }
  }
}

} // namespace resnet
