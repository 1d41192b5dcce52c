#pragma once

// A ModelConfig (<resnet/model_config.h>) as JSON, in the layout of timm's
// config.json on the Hugging Face Hub, so that one reader serves the Hub's
// files and the trainer's:
//
//   {"architecture": "resnet50", "num_classes": 1000,
//    "model_args": {"in_chans": 3},
//    "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.95,
//        "crop_mode": "center", "interpolation": "bicubic",
//        "mean": [...], "std": [...], "label_names": [...]},
//    "resnet": {"stem": "imagenet"}}
//
// The image is resized so that its shorter side is floor(input_size /
// crop_pct), then the central input_size square is kept, as timm's
// evaluation transform does.

#include <resnet/io/files.h>
#include <resnet/model_config.h>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace resnet {

/// `config` as timm's config.json lays it out.
inline nlohmann::json model_config_to_json(const ModelConfig& config) {
  const auto& p = config.preprocess;
  const double crop_pct = p.resize() > 0 && p.crop() > 0
      ? static_cast<double>(p.crop()) / static_cast<double>(p.resize())
      : 1.0;
  nlohmann::json cfg = {
      {"input_size",
       {config.in_channels, config.input_size, config.input_size}},
      {"crop_pct", crop_pct},
      {"crop_mode", "center"},
      {"interpolation", p.interpolation()},
      {"mean", p.mean()},
      {"std", p.std()},
      {"num_classes", config.num_classes}};
  if (!config.label_names.empty()) {
    cfg["label_names"] = config.label_names;
  }
  nlohmann::json j = {
      {"architecture", config.architecture},
      {"num_classes", config.num_classes},
      {"model_args", {{"in_chans", config.in_channels}}},
      {"pretrained_cfg", cfg}};
  if (!config.stem.empty()) {
    j["resnet"] = {{"stem", config.stem}};
  }
  return j;
}

/// The ModelConfig of timm's config.json layout (model_config_to_json's or
/// the Hub's). `where` names the source in errors.
inline ModelConfig model_config_from_json(
    const nlohmann::json& j,
    const std::string& where = "config.json") {
  const auto fail = [&](const std::string& what) {
    TORCH_CHECK(false, "resnet: ", where, ": ", what);
  };
  try {
    if (!j.is_object() || !j.contains("architecture")) {
      fail("expected a JSON object with \"architecture\"");
    }
    const nlohmann::json empty = nlohmann::json::object();
    const auto& cfg =
        j.contains("pretrained_cfg") ? j.at("pretrained_cfg") : empty;
    ModelConfig c;
    c.architecture = j.at("architecture").get<std::string>();
    c.num_classes = j.contains("num_classes")
        ? j.at("num_classes").get<int64_t>()
        : cfg.value("num_classes", int64_t{1000});
    std::vector<int64_t> input =
        cfg.value("input_size", std::vector<int64_t>{c.in_channels, 224, 224});
    if (input.size() != 3 || input[0] < 1 || input[1] < 1 || input[2] < 1) {
      fail("expected input_size [channels, height, width]");
    }
    c.in_channels = input[0];
    if (j.contains("model_args") && j.at("model_args").contains("in_chans")) {
      c.in_channels = j.at("model_args").at("in_chans").get<int64_t>();
    }
    c.input_size = std::min(input[1], input[2]);
    const double crop_pct = cfg.value("crop_pct", 0.875);
    if (!(crop_pct > 0 && crop_pct <= 1)) {
      fail("expected crop_pct in (0, 1], got " + std::to_string(crop_pct));
    }
    const auto mode = cfg.value("crop_mode", std::string("center"));
    if (mode != "center") {
      fail("crop_mode \"" + mode + "\" is not supported (only \"center\")");
    }
    auto& p = c.preprocess;
    p.crop(c.input_size);
    p.resize(static_cast<int64_t>(
        std::floor(static_cast<double>(c.input_size) / crop_pct + 1e-9)));
    p.interpolation(cfg.value("interpolation", std::string("bilinear")));
    if (p.interpolation() != "bilinear" && p.interpolation() != "bicubic") {
      fail(
          "interpolation \"" + p.interpolation() +
          "\" is not supported (bilinear or bicubic)");
    }
    p.mean(cfg.value("mean", kImageNetMean));
    p.std(cfg.value("std", kImageNetStd));
    if (static_cast<int64_t>(p.mean().size()) != c.in_channels ||
        static_cast<int64_t>(p.std().size()) != c.in_channels) {
      fail(
          "expected one mean and std per input channel (" +
          std::to_string(c.in_channels) + ")");
    }
    c.label_names = cfg.value("label_names", std::vector<std::string>{});
    if (!c.label_names.empty() &&
        static_cast<int64_t>(c.label_names.size()) != c.num_classes) {
      fail(
          std::to_string(c.label_names.size()) + " label names for " +
          std::to_string(c.num_classes) + " classes");
    }
    if (j.contains("resnet")) {
      c.stem = j.at("resnet").value("stem", std::string());
    }
    if (c.num_classes < 1) {
      fail("expected num_classes >= 1");
    }
    return c;
  } catch (const nlohmann::json::exception& e) {
    fail(e.what());
  }
  return {};
}

/// The ModelConfig in the JSON file `path`.
inline ModelConfig read_model_config(const std::string& path) {
  const auto bytes = read_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "resnet: '", path, "' is not JSON: ", e.what());
  }
  return model_config_from_json(j, "'" + path + "'");
}

/// Writes `config` to `path` atomically.
inline void write_model_config(
    const std::string& path,
    const ModelConfig& config) {
  write_file_atomically(path, model_config_to_json(config).dump(2) + "\n");
}

/// The config.json in the folder of the weights file `weights_path`, which
/// describes the weights in that folder (as the trainer writes it, and as
/// a Hub snapshot holds it); nullopt when there is none.
inline std::optional<ModelConfig> find_model_config(
    const std::string& weights_path) {
  const auto path =
      std::filesystem::path(weights_path).parent_path() / "config.json";
  if (!std::filesystem::is_regular_file(path)) {
    return std::nullopt;
  }
  return read_model_config(path.string());
}

} // namespace resnet
