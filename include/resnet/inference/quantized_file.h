#pragma once

// An int8 network (`Int8ResNet`) in a safetensors file: its int8 weights,
// their scales and the float32 biases and classifier as tensors, the
// network's shape and the activations' scales and zero points as JSON in the
// header's metadata ("resnet.int8"). Loading it needs no calibration; every
// value is checked before anything runs, so that a damaged or hostile file
// is an error, never a crash.
//
//   resnet::save_quantized(int8, "model.int8.safetensors");
//   auto again = resnet::load_quantized("model.int8.safetensors");

#include <resnet/inference/quantize.h>
#include <resnet/io/safetensors.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

namespace detail {

/// The metadata key of an int8 network's description, and its version.
inline constexpr const char* kInt8MetadataKey = "resnet.int8";
inline constexpr int kInt8FormatVersion = 1;

inline nlohmann::json quant_params_json(QuantParams q) {
  return nlohmann::json::array({q.scale, q.zero_point});
}

// A scale and zero point of a uint8 activation from `j`, checked.
inline QuantParams quant_params_from(
    const nlohmann::json& j,
    const std::string& what) {
  TORCH_CHECK(
      j.is_array() && j.size() == 2 && j[0].is_number() &&
          j[1].is_number_integer(),
      what,
      " is not [scale, zero point]");
  QuantParams q{j[0].get<double>(), j[1].get<int64_t>()};
  TORCH_CHECK(
      std::isfinite(q.scale) && q.scale > 0 && q.zero_point >= 0 &&
          q.zero_point <= 255,
      what,
      " has scale ",
      q.scale,
      " and zero point ",
      q.zero_point,
      " (a scale > 0, a zero point in [0, 255])");
  return q;
}

// Two integers in [lo, hi] from `j`.
inline std::vector<int64_t> pair_from(
    const nlohmann::json& j,
    int64_t lo,
    int64_t hi,
    const std::string& what) {
  TORCH_CHECK(
      j.is_array() && j.size() == 2 && j[0].is_number_integer() &&
          j[1].is_number_integer(),
      what,
      " is not two integers");
  std::vector<int64_t> v{j[0].get<int64_t>(), j[1].get<int64_t>()};
  for (const auto x : v) {
    TORCH_CHECK(
        x >= lo && x <= hi, what, " must be in [", lo, ", ", hi, "], got ", x);
  }
  return v;
}

// The tensor `name` of `tensors`, of `dtype` and `sizes`, taken out of it.
inline torch::Tensor take_tensor(
    std::map<std::string, torch::Tensor>& tensors,
    const std::string& name,
    torch::ScalarType dtype,
    std::vector<int64_t> sizes) {
  const auto it = tensors.find(name);
  TORCH_CHECK(it != tensors.end(), "there is no tensor '", name, "'");
  auto t = std::move(it->second);
  tensors.erase(it);
  TORCH_CHECK(
      t.scalar_type() == dtype && t.sizes() == c10::IntArrayRef(sizes),
      "'",
      name,
      "' is ",
      t.scalar_type(),
      " ",
      t.sizes(),
      ", expected ",
      dtype,
      " ",
      c10::IntArrayRef(sizes));
  return t;
}

// The convolution `name` whose input has `in_channels` channels, checked
// against the tensors it takes from `tensors`.
inline Int8Conv conv_from(
    const nlohmann::json& convs,
    std::map<std::string, torch::Tensor>& tensors,
    const std::string& name,
    int64_t in_channels) {
  TORCH_CHECK(
      convs.is_object() && convs.contains(name) && convs[name].is_object(),
      "the description has no convolution '",
      name,
      "'");
  const auto& j = convs[name];
  for (const auto* key :
       {"stride", "padding", "dilation", "groups", "input", "output"}) {
    TORCH_CHECK(j.contains(key), "convolution '", name, "' has no ", key);
  }
  const auto weight_it = tensors.find(name + ".weight");
  TORCH_CHECK(
      weight_it != tensors.end() && weight_it->second.dim() == 4,
      "there is no 4-D tensor '",
      name,
      ".weight'");
  const auto shape = weight_it->second.sizes().vec();
  const int64_t out = shape[0], kh = shape[2], kw = shape[3];
  TORCH_CHECK(
      j["groups"].is_number_integer(),
      "'",
      name,
      "': groups is not an integer");
  const auto groups = j["groups"].get<int64_t>();
  TORCH_CHECK(
      out >= 1 && out <= (1 << 16) && kh >= 1 && kh <= 15 && kw >= 1 &&
          kw <= 15 && groups >= 1 && out % groups == 0 &&
          shape[1] * groups == in_channels,
      "'",
      name,
      ".weight' is ",
      c10::IntArrayRef(shape),
      " with groups ",
      groups,
      " for an input of ",
      in_channels,
      " channels");
  Int8Conv c;
  c.weight = take_tensor(tensors, name + ".weight", torch::kChar, shape);
  c.weight_scale =
      take_tensor(tensors, name + ".weight_scale", torch::kFloat, {out});
  c.bias = take_tensor(tensors, name + ".bias", torch::kFloat, {out});
  TORCH_CHECK(
      torch::isfinite(c.bias).all().item<bool>() &&
          (c.weight_scale > 0).all().item<bool>() &&
          torch::isfinite(c.weight_scale).all().item<bool>(),
      "'",
      name,
      "': its bias must be finite and its weight scales finite and > 0");
  c.geometry.stride = pair_from(j["stride"], 1, 8, name + " stride");
  c.geometry.padding = pair_from(j["padding"], 0, 15, name + " padding");
  c.geometry.dilation = pair_from(j["dilation"], 1, 8, name + " dilation");
  c.geometry.groups = groups;
  c.input = quant_params_from(j["input"], name + " input");
  c.output = quant_params_from(j["output"], name + " output");
  return c;
}

inline nlohmann::json conv_json(const Int8Conv& c) {
  return {
      {"stride", c.geometry.stride},
      {"padding", c.geometry.padding},
      {"dilation", c.geometry.dilation},
      {"groups", c.geometry.groups},
      {"input", quant_params_json(c.input)},
      {"output", quant_params_json(c.output)}};
}

inline Int8ResNet read_quantized(const std::string& path) {
  auto file = read_safetensors(path);
  const auto meta = file.metadata.find(kInt8MetadataKey);
  TORCH_CHECK(
      meta != file.metadata.end(),
      "it is not an int8 network (no \"",
      kInt8MetadataKey,
      "\" in its metadata); quantize a network with resnet::quantize");
  const auto j = nlohmann::json::parse(meta->second, nullptr, false);
  TORCH_CHECK(
      j.is_object() && j.value("version", -1) == kInt8FormatVersion,
      "its description is not version ",
      kInt8FormatVersion,
      " JSON");
  for (const auto* key :
       {"in_channels", "max_pool", "input", "convs", "stages"}) {
    TORCH_CHECK(j.contains(key), "its description has no ", key);
  }
  std::map<std::string, torch::Tensor> tensors;
  for (auto& [name, t] : file.tensors) {
    tensors[name] = std::move(t);
  }
  Int8ResNet net;
  TORCH_CHECK(
      j["in_channels"].is_number_integer() && j["max_pool"].is_boolean(),
      "in_channels is not an integer or max_pool not a boolean");
  net.in_channels = j["in_channels"].get<int64_t>();
  TORCH_CHECK(
      net.in_channels >= 1 && net.in_channels <= 64,
      "in_channels must be in [1, 64], got ",
      net.in_channels);
  net.max_pool = j["max_pool"].get<bool>();
  net.input = quant_params_from(j["input"], "the input");
  const auto& convs = j["convs"];
  net.stem = conv_from(convs, tensors, "conv1", net.in_channels);
  int64_t stride = net.stem.geometry.stride[0] * (net.max_pool ? 2 : 1);
  int64_t channels = net.stem.weight.size(0);
  const auto& stages = j["stages"];
  TORCH_CHECK(
      stages.is_array() && stages.size() <= 16,
      "stages is not a list of lists");
  for (size_t s = 0; s < stages.size(); ++s) {
    TORCH_CHECK(
        stages[s].is_array() && stages[s].size() <= 1024,
        "stage ",
        s + 1,
        " is not a list of blocks");
    net.stages.emplace_back();
    for (size_t b = 0; b < stages[s].size(); ++b) {
      const auto prefix =
          "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const auto& jb = stages[s][b];
      TORCH_CHECK(
          jb.is_object() && jb.value("convs", 0) >= 1 &&
              jb.value("convs", 0) <= 8 && jb.contains("downsample") &&
              jb["downsample"].is_boolean() &&
              jb.value("zero_pad_stride", -1) >= 0 &&
              jb.value("zero_pad_stride", -1) <= 8,
          "block ",
          prefix,
          " is not {convs: 1 to 8, downsample, zero_pad_stride: 0 to 8}");
      Int8ResNet::Block block;
      block.zero_pad_stride = jb["zero_pad_stride"].get<int64_t>();
      int64_t in = channels, block_stride = 1;
      for (int64_t k = 0; k < jb["convs"].get<int64_t>(); ++k) {
        block.convs.push_back(conv_from(
            convs, tensors, prefix + "conv" + std::to_string(k + 1), in));
        in = block.convs.back().weight.size(0);
        block_stride *= block.convs.back().geometry.stride[0];
      }
      int64_t shortcut_channels = channels;
      if (jb["downsample"].get<bool>()) {
        TORCH_CHECK(
            block.zero_pad_stride == 0,
            "block ",
            prefix,
            " has both a convolution and a zero-padding shortcut");
        block.downsample =
            conv_from(convs, tensors, prefix + "downsample", channels);
        shortcut_channels = block.downsample->weight.size(0);
      } else if (block.zero_pad_stride > 0) {
        shortcut_channels = in;
        TORCH_CHECK(
            in >= channels,
            "block ",
            prefix,
            " pads ",
            channels,
            " channels to fewer, ",
            in);
      }
      TORCH_CHECK(
          shortcut_channels == in,
          "block ",
          prefix,
          " adds a shortcut of ",
          shortcut_channels,
          " channels to ",
          in);
      channels = in;
      stride *= block_stride;
      TORCH_CHECK(stride <= 4096, "the network's total stride exceeds 4096");
      net.stages.back().push_back(std::move(block));
    }
  }
  net.total_stride = stride;
  if (tensors.count("fc.weight") != 0) {
    const auto classes = tensors["fc.weight"].dim() == 2
        ? tensors["fc.weight"].size(0)
        : int64_t{-1};
    TORCH_CHECK(classes >= 1, "'fc.weight' is not [classes, channels]");
    net.fc_weight =
        take_tensor(tensors, "fc.weight", torch::kFloat, {classes, channels});
    net.fc_bias = take_tensor(tensors, "fc.bias", torch::kFloat, {classes});
  }
  TORCH_CHECK(
      tensors.empty(),
      "it holds a tensor '",
      tensors.empty() ? "" : tensors.begin()->first,
      "' that no part of the network takes");
  net.for_each_conv([](const std::string&, Int8Conv& c) { c.pack(); });
  return net;
}

} // namespace detail

/// Writes the int8 network `net` to `path` as a safetensors file
/// (atomically; see the top of this header for its contents).
inline void save_quantized(Int8ResNet net, const std::string& path) {
  StateDict state;
  nlohmann::json convs = nlohmann::json::object();
  net.for_each_conv([&](const std::string& name, Int8Conv& c) {
    state.emplace_back(name + ".weight", c.weight);
    state.emplace_back(name + ".weight_scale", c.weight_scale);
    state.emplace_back(name + ".bias", c.bias);
    convs[name] = detail::conv_json(c);
  });
  nlohmann::json stages = nlohmann::json::array();
  for (const auto& stage : net.stages) {
    nlohmann::json blocks = nlohmann::json::array();
    for (const auto& b : stage) {
      blocks.push_back(
          {{"convs", b.convs.size()},
           {"downsample", b.downsample.has_value()},
           {"zero_pad_stride", b.zero_pad_stride}});
    }
    stages.push_back(std::move(blocks));
  }
  if (net.fc_weight.defined()) {
    state.emplace_back("fc.weight", net.fc_weight);
    state.emplace_back("fc.bias", net.fc_bias);
  }
  const nlohmann::json description = {
      {"version", detail::kInt8FormatVersion},
      {"in_channels", net.in_channels},
      {"max_pool", net.max_pool},
      {"input", detail::quant_params_json(net.input)},
      {"convs", std::move(convs)},
      {"stages", std::move(stages)}};
  save_safetensors(
      state,
      path,
      {{"format", "pt"}, {detail::kInt8MetadataKey, description.dump()}});
}

/// Whether `path` is a file `save_quantized` wrote (a safetensors file
/// whose metadata describes an int8 network), reading its header only;
/// false for anything else, a missing file included. `load_quantized`
/// then checks the rest.
inline bool is_quantized_file(const std::string& path) {
  try {
    return read_safetensors_metadata(path).count(detail::kInt8MetadataKey) > 0;
  } catch (const c10::Error&) {
    return false;
  }
}

/// The int8 network that `save_quantized` wrote to `path`, its weights
/// packed for oneDNN. Every shape, scale, zero point and geometry is checked
/// first: a `c10::Error` naming the file and the problem for anything that
/// does not make a network. Running it needs LibTorch 2.x
/// (int8_available()); elsewhere a file that checks out is refused so.
inline Int8ResNet load_quantized(const std::string& path) {
  try {
    return detail::read_quantized(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(
        false, "resnet: cannot load int8 network '", path, "': ", e.msg());
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(
        false, "resnet: cannot load int8 network '", path, "': ", e.what());
  }
}

} // namespace resnet
