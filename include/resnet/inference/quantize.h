#pragma once

// Int8 inference on the CPU: post-training static quantization of a fused
// network (`fuse_for_inference`) into `Int8ResNet`, whose convolutions take
// uint8 activations and per-channel symmetric int8 weights, with ReLU and
// the residual addition fused into oneDNN's quantized convolution
// (<resnet/inference/detail/onednn_int8.h>; LibTorch 2.x). The activations'
// ranges come from calibration images through robust observers.
//
//   auto fused = resnet::fuse_for_inference(*model);
//   auto int8 = resnet::quantize(*fused, calibration_images);
//   auto logits = int8(images); // float32 in, float32 logits out

#include <resnet/inference/detail/onednn_int8.h>
#include <resnet/inference/fused.h>
#include <resnet/model/functional.h>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

using detail::QuantParams;

namespace detail {

// Guards the weights an int8 convolution packs for the input size it meets.
inline std::mutex& int8_pack_mutex() {
  static std::mutex m;
  return m;
}

} // namespace detail

/// How `quantize` chooses each activation's range from the calibration
/// images.
struct QuantizeOptions {
  /// "mse" (the default): the clipping range that minimizes the expected
  /// squared error of quantization (clipping plus rounding) over a histogram
  /// of the values, as PyTorch's HistogramObserver aims to; "percentile":
  /// the `percentile`-th percentile of the values (and the mirrored one
  /// below zero); "minmax": the smallest and largest values seen.
  TORCH_ARG(std::string, observer) = "mse";
  /// The percentile of the "percentile" observer, in (50, 100].
  TORCH_ARG(double, percentile) = 99.99;
  /// Bins of the observers' histograms.
  TORCH_ARG(int64_t, bins) = 2048;
  /// Calibration images run at a time.
  TORCH_ARG(int64_t, batch_size) = 32;
};

/// Whether this LibTorch runs int8 inference (oneDNN's quantized operators
/// of LibTorch 2.x).
inline bool int8_available() {
  return detail::OneDnnInt8::available();
}

/// A quantized convolution: int8 weights with a float32 scale per output
/// channel (symmetric), a float32 bias, and the quantization of its input
/// and output activations.
struct Int8Conv {
  /// int8 [out, in / groups, kh, kw].
  torch::Tensor weight;
  /// float32 [out]: weight = scale * int8 value.
  torch::Tensor weight_scale;
  /// float32 [out].
  torch::Tensor bias;
  /// Stride, padding, dilation and groups.
  detail::ConvGeometry geometry;
  /// The quantization of the input.
  QuantParams input;
  /// The quantization of the output.
  QuantParams output;

  /// Packs the weights for oneDNN, in the layout it picks for inputs of
  /// `input_sizes` (any, where empty). The first call of each input size
  /// packs them again for it, as oneDNN's int8 kernels otherwise reorder
  /// the weights on every call for some shapes (strided and some 1x1
  /// convolutions: 15 times slower).
  void pack(c10::IntArrayRef input_sizes = {}) {
    const auto packed = detail::OneDnnInt8::prepack(
        weight, weight_scale, input, geometry, input_sizes);
    std::lock_guard<std::mutex> lock(detail::int8_pack_mutex());
    packed_ = packed;
    packed_sizes_ = input_sizes.vec();
    zero_points_ = torch::zeros({weight.size(0)}, torch::kLong);
  }

  /// The convolution of `x` (uint8, channels last, quantized as `input`),
  /// then `post`; for `PostOp::AddRelu` adding `accum` (uint8, quantized as
  /// `accum_q`; it may be overwritten). uint8, quantized as `output`.
  torch::Tensor operator()(
      const torch::Tensor& x,
      PostOp post,
      const torch::Tensor& accum = {},
      QuantParams accum_q = {}) const {
    const auto out_sizes =
        detail::conv_output_sizes(x.sizes(), weight.sizes(), geometry);
    TORCH_CHECK(
        post != PostOp::AddRelu ||
            (accum.defined() && accum.sizes() == c10::IntArrayRef(out_sizes) &&
             accum.scalar_type() == torch::kByte),
        "resnet: an int8 convolution with output ",
        c10::IntArrayRef(out_sizes),
        " cannot add a shortcut of ",
        accum.defined() ? accum.sizes() : c10::IntArrayRef{},
        "; the block's two paths do not meet");
    torch::Tensor packed, zero_points;
    {
      std::lock_guard<std::mutex> lock(detail::int8_pack_mutex());
      packed = packed_;
      zero_points = zero_points_;
      if (packed_sizes_ != x.sizes()) {
        packed = packed_ = detail::OneDnnInt8::prepack(
            weight, weight_scale, input, geometry, x.sizes());
        packed_sizes_ = x.sizes().vec();
      }
    }
    return detail::OneDnnInt8::run(
        x,
        input,
        packed,
        weight_scale,
        zero_points,
        bias,
        geometry,
        output,
        post,
        accum,
        accum_q);
  }

 private:
  mutable torch::Tensor packed_;
  mutable std::vector<int64_t> packed_sizes_;
  torch::Tensor zero_points_;
};

namespace detail {

// uint8 [N, C, H, W], channels last: `x` quantized with `q`.
inline torch::Tensor quantize_uint8(const torch::Tensor& x, QuantParams q) {
  return torch::round(x.contiguous(torch::MemoryFormat::ChannelsLast) / q.scale)
      .add_(static_cast<double>(q.zero_point))
      .clamp_(0, 255)
      .to(torch::kByte);
}

// The stem's 3x3, stride-2 max pooling (padding 1) of uint8 `x` whose zero
// point is 0, so that padding with 0 never wins over a value.
inline torch::Tensor max_pool_uint8(const torch::Tensor& x) {
  const int64_t oh = (x.size(2) - 1) / 2 + 1, ow = (x.size(3) - 1) / 2 + 1;
  const auto padded = torch::constant_pad_nd(x, {1, 1, 1, 1}, 0);
  torch::Tensor out;
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      const auto window = padded.slice(2, i, i + 2 * (oh - 1) + 1, 2)
                              .slice(3, j, j + 2 * (ow - 1) + 1, 2);
      if (!out.defined()) {
        out = window.contiguous(torch::MemoryFormat::ChannelsLast);
      } else {
        torch::maximum_out(out, out, window);
      }
    }
  }
  return out;
}

// The range of one activation over the calibration images: its smallest
// and largest values (first pass), then a histogram over them (second).
class RangeObserver {
 public:
  void see_range(const torch::Tensor& x) {
    const auto [lo, hi] = torch::aminmax(x);
    min_ = std::min(min_, lo.item<double>());
    max_ = std::max(max_, hi.item<double>());
  }

  void see_values(const torch::Tensor& x, int64_t bins) {
    const auto h = torch::histc(x.to(torch::kFloat), bins, low(), high())
                       .to(torch::kDouble);
    counts_ = counts_.defined() ? counts_ + h : h;
  }

  // The quantization that the observer `options.observer()` chooses.
  QuantParams choose(const QuantizeOptions& options) const {
    double lo = low(), hi = high();
    if (options.observer() != "minmax" && counts_.defined()) {
      std::tie(lo, hi) = options.observer() == "percentile"
          ? percentile_range(options.percentile())
          : mse_range();
    }
    return params_for(lo, hi);
  }

 private:
  double low() const {
    return std::min(min_, 0.0);
  }
  double high() const {
    return std::max({max_, 0.0, low() + 1e-6});
  }

  static QuantParams params_for(double lo, double hi) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, lo + 1e-8);
    QuantParams q;
    q.scale = (hi - lo) / 255;
    q.zero_point = std::clamp<int64_t>(std::llround(-lo / q.scale), 0, 255);
    return q;
  }

  std::pair<double, double> percentile_range(double percentile) const {
    const auto c = counts_.cumsum(0);
    const double total = c[-1].item<double>();
    const int64_t bins = counts_.size(0);
    const double width = (high() - low()) / static_cast<double>(bins);
    const auto edge = [&](double share) {
      const auto below = (c < share * total).sum().item<int64_t>();
      return low() + width * static_cast<double>(std::min(below + 1, bins));
    };
    const double hi = edge(percentile / 100);
    const double lo = low() < 0 ? edge(1 - percentile / 100) - width : 0.0;
    return {std::min(lo, 0.0), hi};
  }

  // The range [a lo, a hi], a in (0, 1], with the least expected squared
  // error: what clipping loses beyond it plus rounding's (step^2 / 12 per
  // value) within it.
  std::pair<double, double> mse_range() const {
    const auto n = counts_.contiguous();
    const int64_t bins = n.size(0);
    const double lo = low(),
                 width = (high() - low()) / static_cast<double>(bins);
    const auto* count = n.data_ptr<double>();
    std::vector<double> s0(bins + 1, 0), s1(bins + 1, 0), s2(bins + 1, 0);
    for (int64_t j = 0; j < bins; ++j) {
      const double center = lo + (static_cast<double>(j) + 0.5) * width;
      s0[j + 1] = s0[j] + count[j];
      s1[j + 1] = s1[j] + count[j] * center;
      s2[j + 1] = s2[j] + count[j] * center * center;
    }
    // sum over bins [a, b) of count * (center - v)^2
    const auto spread = [&](int64_t a, int64_t b, double v) {
      return s2[b] - s2[a] - 2 * v * (s1[b] - s1[a]) + v * v * (s0[b] - s0[a]);
    };
    double best = std::numeric_limits<double>::infinity();
    std::pair<double, double> range{low(), high()};
    for (int64_t k = 1; k <= bins; ++k) {
      const double a = static_cast<double>(k) / static_cast<double>(bins);
      const double clip_lo = a * low(), clip_hi = a * high();
      // Bins whose centers lie inside [clip_lo, clip_hi].
      const auto first = std::clamp<int64_t>(
          static_cast<int64_t>(std::ceil((clip_lo - lo) / width - 0.5)),
          0,
          bins);
      const auto last = std::clamp<int64_t>(
          static_cast<int64_t>(std::floor((clip_hi - lo) / width - 0.5)) + 1,
          first,
          bins);
      const double step = (clip_hi - clip_lo) / 255;
      const double error = spread(0, first, clip_lo) +
          spread(last, bins, clip_hi) +
          (s0[last] - s0[first]) * step * step / 12;
      if (error < best) {
        best = error;
        range = {clip_lo, clip_hi};
      }
    }
    return range;
  }

  double min_ = std::numeric_limits<double>::infinity();
  double max_ = -std::numeric_limits<double>::infinity();
  torch::Tensor counts_;
};

// Symmetric per-output-channel int8 weights of `c`, with `input` and
// `output` quantizations.
inline Int8Conv
quantize_conv(const FusedConv2dImpl& c, QuantParams input, QuantParams output) {
  const auto w = c.weight.to(torch::kFloat).contiguous();
  Int8Conv q;
  q.weight_scale = (w.abs().amax({1, 2, 3}) / 127).clamp_min(1e-12);
  q.weight = torch::round(w / q.weight_scale.view({-1, 1, 1, 1}))
                 .clamp_(-127, 127)
                 .to(torch::kChar);
  q.bias = c.bias.to(torch::kFloat).contiguous();
  q.geometry = c.geometry();
  q.input = input;
  q.output = output;
  return q;
}

} // namespace detail

/// An int8 ResNet made by `quantize`: float32
/// images in, float32 logits out, everything between in uint8 activations
/// and int8 weights on oneDNN; the classifier in float32. CPU only.
class Int8ResNet {
 public:
  /// A residual block: its convolutions (ReLU after each but the last, the
  /// last adding the shortcut and applying ReLU) and its shortcut.
  struct Block {
    /// conv1 ... convK.
    std::vector<Int8Conv> convs;
    /// The shortcut's convolution, if it has one.
    std::optional<Int8Conv> downsample;
    /// The stride of a zero-padding shortcut; 0 for the others.
    int64_t zero_pad_stride = 0;
  };

  /// Input channels.
  int64_t in_channels = 3;
  /// Smallest input height and width.
  int64_t total_stride = 1;
  /// Whether the stem ends with a 3x3, stride-2 max pooling.
  bool max_pool = false;
  /// How the float32 input becomes uint8.
  QuantParams input;
  /// The stem's convolution (ReLU after it).
  Int8Conv stem;
  /// layer1 ... layerN.
  std::vector<std::vector<Block>> stages;
  /// The classifier's weight [classes, channels] (float32); undefined for
  /// a headless network.
  torch::Tensor fc_weight;
  /// The classifier's bias [classes] (float32); undefined without one.
  torch::Tensor fc_bias;

  /// Logits [N, classes] (pooled features without a classifier) of float32
  /// images [N, C, H, W] normalized as for the float network.
  torch::Tensor forward(const torch::Tensor& x) const {
    functional::check_network_input(x, in_channels, total_stride, max_pool);
    TORCH_CHECK(
        x.is_cpu() && x.scalar_type() == torch::kFloat,
        "resnet: int8 inference takes float32 CPU images, got ",
        x.scalar_type(),
        " on ",
        x.device());
    c10::InferenceMode guard;
    auto out = stem(detail::quantize_uint8(x, input), PostOp::Relu);
    QuantParams q = stem.output;
    if (max_pool) {
      out = detail::max_pool_uint8(out);
    }
    for (const auto& stage : stages) {
      for (const auto& block : stage) {
        auto t = out;
        for (size_t k = 0; k + 1 < block.convs.size(); ++k) {
          t = block.convs[k](t, PostOp::Relu);
        }
        const auto& last = block.convs.back();
        if (block.downsample) {
          const auto shortcut = (*block.downsample)(out, PostOp::None);
          out = last(t, PostOp::AddRelu, shortcut, block.downsample->output);
        } else if (block.zero_pad_stride > 0) {
          const auto shortcut =
              functional::zero_pad_shortcut(
                  out, block.zero_pad_stride, last.weight.size(0))
                  .contiguous(torch::MemoryFormat::ChannelsLast);
          out = last(t, PostOp::AddRelu, shortcut, q);
        } else {
          out = last(t, PostOp::AddRelu, out, q);
        }
        q = last.output;
      }
    }
    auto pooled = out.to(torch::kFloat)
                      .mean({2, 3})
                      .sub_(static_cast<double>(q.zero_point))
                      .mul_(q.scale);
    return fc_weight.defined() ? torch::linear(pooled, fc_weight, fc_bias)
                               : pooled;
  }

  /// forward(x).
  torch::Tensor operator()(const torch::Tensor& x) const {
    return forward(x);
  }

  /// Every convolution with its name (conv1, layer1.0.conv1, ...,
  /// layer2.0.downsample), in the order they run.
  template <class Visit>
  void for_each_conv(Visit visit) {
    visit("conv1", stem);
    for (size_t s = 0; s < stages.size(); ++s) {
      for (size_t b = 0; b < stages[s].size(); ++b) {
        const auto prefix =
            "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
        auto& block = stages[s][b];
        for (size_t k = 0; k < block.convs.size(); ++k) {
          visit(prefix + "conv" + std::to_string(k + 1), block.convs[k]);
        }
        if (block.downsample) {
          visit(prefix + "downsample", *block.downsample);
        }
      }
    }
  }
};

namespace detail {

// Runs the fused network's float32 kernels over `x`, handing each
// activation that the int8 network quantizes to `see` in the order
// `quantize` builds them: the input, the stem's output, then per block the
// outputs of its convolutions but the last, of its shortcut convolution, and
// of the block.
template <class See>
void walk_activations(InferenceResNetImpl& net, torch::Tensor x, See see) {
  x = x.to(torch::kFloat).contiguous(torch::MemoryFormat::ChannelsLast);
  see(x);
  auto out = net.conv1->forward(x, PostOp::Relu);
  see(out);
  if (net.layout().max_pool) {
    out = functional::stem_max_pool(out);
  }
  for (auto& stage : net.stages) {
    for (auto& module : stage->children()) {
      auto& block = *module->as<FusedBlockImpl>();
      auto t = out;
      for (size_t k = 0; k + 1 < block.convs.size(); ++k) {
        t = block.convs[k]->forward(t, PostOp::Relu);
        see(t);
      }
      auto& last = *block.convs.back();
      torch::Tensor shortcut = out;
      if (!block.downsample.is_empty()) {
        shortcut = block.downsample->forward(out, PostOp::None);
        see(shortcut);
      } else if (block.zero_pad_stride() > 0) {
        shortcut = functional::zero_pad_shortcut(
            out, block.zero_pad_stride(), last.weight.size(0));
      }
      out = last.forward(t, PostOp::AddRelu, shortcut);
      see(out);
    }
  }
}

} // namespace detail

/// `fused` (float32, CPU) as an int8 network, calibrated on `batches` of
/// images normalized as for it: each activation's range is chosen by the
/// observer of `options` over all of them; weights per output channel,
/// symmetric. Needs LibTorch 2.x (int8_available()).
inline Int8ResNet quantize(
    InferenceResNetImpl& fused,
    const std::vector<torch::Tensor>& batches,
    const QuantizeOptions& options = {}) {
  TORCH_CHECK(
      int8_available(),
      "resnet: int8 inference needs oneDNN's quantized convolution "
      "(onednn::qconv2d_pointwise of LibTorch 2.x); this LibTorch ",
      TORCH_VERSION,
      " lacks it");
  TORCH_CHECK(
      options.observer() == "mse" || options.observer() == "percentile" ||
          options.observer() == "minmax",
      "resnet: QuantizeOptions::observer is mse, percentile or minmax, not '",
      options.observer(),
      "'");
  TORCH_CHECK(
      options.percentile() > 50 && options.percentile() <= 100,
      "resnet: QuantizeOptions::percentile must be in (50, 100], got ",
      options.percentile());
  TORCH_CHECK(
      options.bins() >= 16 && options.bins() <= (1 << 20),
      "resnet: QuantizeOptions::bins must be in [16, 2^20], got ",
      options.bins());
  TORCH_CHECK(!batches.empty(), "resnet: quantize needs calibration images");
  TORCH_CHECK(
      fused.conv1->weight.is_cpu(),
      "resnet: quantize takes a network on the CPU");
  c10::InferenceMode guard;
  std::vector<detail::RangeObserver> observers;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& batch : batches) {
      size_t i = 0;
      detail::walk_activations(fused, batch, [&](const torch::Tensor& t) {
        if (pass == 0) {
          if (i == observers.size()) {
            observers.emplace_back();
          }
          observers[i].see_range(t);
        } else {
          observers[i].see_values(t, options.bins());
        }
        ++i;
      });
    }
    if (options.observer() == "minmax") {
      break;
    }
  }
  std::vector<QuantParams> q;
  for (const auto& o : observers) {
    q.push_back(o.choose(options));
  }
  // Rebuild in walk_activations' order.
  size_t at = 0;
  Int8ResNet net;
  net.in_channels = fused.layout().in_channels;
  net.total_stride = fused.layout().total_stride;
  net.max_pool = fused.layout().max_pool;
  net.input = q[at++];
  net.stem = detail::quantize_conv(*fused.conv1, net.input, q[at]);
  QuantParams current = q[at++];
  for (auto& stage : fused.stages) {
    net.stages.emplace_back();
    for (auto& module : stage->children()) {
      auto& block = *module->as<FusedBlockImpl>();
      Int8ResNet::Block b;
      QuantParams in = current;
      for (size_t k = 0; k + 1 < block.convs.size(); ++k) {
        b.convs.push_back(detail::quantize_conv(*block.convs[k], in, q[at]));
        in = q[at++];
      }
      if (!block.downsample.is_empty()) {
        b.downsample =
            detail::quantize_conv(*block.downsample, current, q[at++]);
      }
      b.zero_pad_stride = block.zero_pad_stride();
      b.convs.push_back(detail::quantize_conv(*block.convs.back(), in, q[at]));
      current = q[at++];
      net.stages.back().push_back(std::move(b));
    }
  }
  TORCH_INTERNAL_ASSERT(at == q.size());
  if (!fused.fc.is_empty()) {
    net.fc_weight = fused.fc->weight.detach().to(torch::kFloat).clone();
    net.fc_bias = fused.fc->bias.detach().to(torch::kFloat).clone();
  }
  net.for_each_conv([](const std::string&, Int8Conv& c) { c.pack(); });
  return net;
}

/// `quantize` with the images [N, C, H, W] cut into batches of
/// `options.batch_size()`.
inline Int8ResNet quantize(
    InferenceResNetImpl& fused,
    const torch::Tensor& images,
    const QuantizeOptions& options = {}) {
  TORCH_CHECK(
      images.defined() && images.dim() == 4 && images.size(0) > 0,
      "resnet: quantize expects calibration images [N, C, H, W], got ",
      images.defined() ? images.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(
      options.batch_size() >= 1, "resnet: QuantizeOptions::batch_size >= 1");
  std::vector<torch::Tensor> batches;
  for (int64_t i = 0; i < images.size(0); i += options.batch_size()) {
    batches.push_back(images.narrow(
        0, i, std::min(options.batch_size(), images.size(0) - i)));
  }
  return quantize(fused, batches, options);
}

/// `quantize` for a module holder (`fuse_for_inference`'s result).
template <class Images>
Int8ResNet quantize(
    InferenceResNet& fused,
    const Images& images,
    const QuantizeOptions& options = {}) {
  return quantize(*fused, images, options);
}

} // namespace resnet
