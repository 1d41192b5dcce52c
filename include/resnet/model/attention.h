#pragma once

// What timm's ResNet variants add to a block's residual branch: channel
// attention (squeeze-and-excitation, efficient channel attention) and
// stochastic depth (drop path).

#include <resnet/model/options.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

namespace resnet {

/// Channels of the squeeze-and-excitation bottleneck for `channels` inputs:
/// `channels / 16` rounded to the nearest multiple of 8, at least 8 (timm's
/// `make_divisible(channels / 16, 8, round_limit=0)`).
inline int64_t se_reduced_channels(int64_t channels) {
  const double v = static_cast<double>(channels) / 16.0;
  const auto rounded = static_cast<int64_t>(v + 4.0) / 8 * 8;
  return rounded < 8 ? 8 : rounded;
}

/// Kernel size of efficient channel attention for `channels` channels:
/// `t = int(|log2(channels) + 1| / 2)`, made odd upwards, at least 3.
inline int64_t eca_kernel_size(int64_t channels) {
  const auto t = static_cast<int64_t>(
      std::abs(std::log2(static_cast<double>(channels)) + 1.0) / 2.0);
  const int64_t odd = t % 2 ? t : t + 1;
  return odd < 3 ? 3 : odd;
}

/// Squeeze-and-excitation (Hu et al. 2018) as timm's `SEModule`: the input
/// scaled per channel by sigmoid(fc2(relu(fc1(mean over H, W)))), `fc1` and
/// `fc2` 1x1 convolutions with bias.
class SqueezeExciteImpl : public torch::nn::Cloneable<SqueezeExciteImpl> {
 public:
  /// For `channels` > 0 input channels, reduced to
  /// `se_reduced_channels(channels)` in between.
  explicit SqueezeExciteImpl(int64_t channels) : channels_(channels) {
    TORCH_CHECK(
        channels > 0,
        "resnet: SqueezeExcite expects channels > 0, got ",
        channels);
    reset();
  }

  /// Creates and registers `fc1` and `fc2`, freshly initialized.
  void reset() override {
    const int64_t reduced = se_reduced_channels(channels_);
    fc1 = register_module(
        "fc1",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(channels_, reduced, 1)));
    fc2 = register_module(
        "fc2",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(reduced, channels_, 1)));
  }

  /// `x` [N, C, H, W] scaled per sample and channel; same shape.
  torch::Tensor forward(const torch::Tensor& x) {
    auto s = x.mean({2, 3}, /*keepdim=*/true);
    s = fc2(fc1(s).relu_());
    return x * s.sigmoid();
  }

  /// Prints `resnet::SqueezeExcite(C, reduced=R)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::SqueezeExcite(" << channels_
           << ", reduced=" << se_reduced_channels(channels_) << ")";
  }

  /// The squeeze, a 1x1 convolution with bias from C to R channels.
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
  /// \var fc2
  /// The excitation, a 1x1 convolution with bias from R to C channels.

 private:
  int64_t channels_;
};

TORCH_MODULE(SqueezeExcite);

/// Efficient channel attention (Wang et al. 2020) as timm's `EcaModule`: the
/// input scaled per channel by sigmoid(conv(mean over H, W)), `conv` a 1-D
/// convolution across channels without bias, its size from
/// `eca_kernel_size`.
class EfficientChannelAttentionImpl
    : public torch::nn::Cloneable<EfficientChannelAttentionImpl> {
 public:
  /// For `channels` > 0 channels; the kernel size follows from them.
  explicit EfficientChannelAttentionImpl(int64_t channels)
      : channels_(channels) {
    TORCH_CHECK(
        channels > 0,
        "resnet: EfficientChannelAttention expects channels > 0, got ",
        channels);
    reset();
  }

  /// Creates and registers `conv`, freshly initialized.
  void reset() override {
    const int64_t k = eca_kernel_size(channels_);
    conv = register_module(
        "conv",
        torch::nn::Conv1d(torch::nn::Conv1dOptions(1, 1, k)
                              .padding((k - 1) / 2)
                              .bias(false)));
  }

  /// `x` [N, C, H, W] scaled per sample and channel; same shape.
  torch::Tensor forward(const torch::Tensor& x) {
    auto s = x.mean({2, 3}).view({x.size(0), 1, -1});
    s = conv(s).sigmoid().view({x.size(0), -1, 1, 1});
    return x * s;
  }

  /// Prints `resnet::EfficientChannelAttention(C, kernel_size=K)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::EfficientChannelAttention(" << channels_
           << ", kernel_size=" << eca_kernel_size(channels_) << ")";
  }

  /// The 1-D convolution across channels: 1 -> 1, kernel K, no bias.
  torch::nn::Conv1d conv{nullptr};

 private:
  int64_t channels_;
};

TORCH_MODULE(EfficientChannelAttention);

namespace detail {

/// The attention module of `kind` for `channels` channels, or an empty
/// AnyModule for `Attention::None`.
inline torch::nn::AnyModule make_attention(Attention kind, int64_t channels) {
  switch (kind) {
    case Attention::SqueezeExcite:
      return torch::nn::AnyModule(SqueezeExcite(channels));
    case Attention::EfficientChannel:
      return torch::nn::AnyModule(EfficientChannelAttention(channels));
    case Attention::None:
      break;
  }
  return {};
}

} // namespace detail

/// Stochastic depth per sample (timm's `drop_path`): in training, each
/// sample of `x` is zeroed with probability `p` and the others scaled by
/// 1 / (1 - p), so the expectation is unchanged; `x` itself otherwise.
inline torch::Tensor
drop_path(const torch::Tensor& x, double p, bool training) {
  TORCH_CHECK(
      p >= 0.0 && p <= 1.0, "resnet: drop_path expects p in [0, 1], got ", p);
  if (p == 0.0 || !training) {
    return x;
  }
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto mask = torch::empty(shape, x.options()).bernoulli_(keep);
  if (keep > 0.0) {
    mask.div_(keep);
  }
  return x * mask;
}

} // namespace resnet
