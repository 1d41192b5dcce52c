#pragma once

// Normalization layers the blocks are templated on, and how to build them.

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <numeric>
#include <ostream>

namespace resnet {

/// The per-channel affine map a batch norm applies in eval mode,
/// `y = x * scale + shift`: scale = weight / sqrt(var + eps) and
/// shift = bias - mean * scale. `weight` and `bias` may be undefined (a norm
/// without affine parameters). Computed in the dtype of `var`; pass float64
/// tensors to fold without rounding.
struct NormAffine {
  /// [C] the factor, `weight / sqrt(var + eps)`.
  torch::Tensor scale;
  /// [C] the offset, `bias - mean * scale`.
  torch::Tensor shift;
};

/// The `NormAffine` of a batch norm with these statistics, parameters and
/// `eps`.
inline NormAffine batch_norm_affine(
    const torch::Tensor& running_mean,
    const torch::Tensor& running_var,
    const torch::Tensor& weight,
    const torch::Tensor& bias,
    double eps) {
  auto scale = (running_var + eps).rsqrt();
  if (weight.defined()) {
    scale = scale * weight;
  }
  auto shift = -running_mean * scale;
  if (bias.defined()) {
    shift = shift + bias;
  }
  return {scale, shift};
}

/// Batch normalization whose statistics and affine parameters are fixed
/// buffers (torchvision.ops.FrozenBatchNorm2d): nothing is learnt and train
/// and eval mode compute the same. The usual choice for detection backbones.
class FrozenBatchNorm2dImpl
    : public torch::nn::Cloneable<FrozenBatchNorm2dImpl> {
 public:
  /// For `num_features` > 0 channels, with `eps` added to the variance; the
  /// buffers start as the identity map (weight 1, bias 0, mean 0, var 1).
  explicit FrozenBatchNorm2dImpl(int64_t num_features, double eps = 1e-5)
      : num_features_(num_features), eps_(eps) {
    TORCH_CHECK(
        num_features > 0,
        "resnet: FrozenBatchNorm2d expects num_features > 0, got ",
        num_features);
    reset();
  }

  /// Registers the four buffers, set to the identity map.
  void reset() override {
    weight = register_buffer("weight", torch::ones({num_features_}));
    bias = register_buffer("bias", torch::zeros({num_features_}));
    running_mean =
        register_buffer("running_mean", torch::zeros({num_features_}));
    running_var = register_buffer("running_var", torch::ones({num_features_}));
  }

  /// Normalizes `x` [N, num_features, H, W] with the fixed statistics, in
  /// x's dtype.
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(
        x.dim() == 4 && x.size(1) == num_features_,
        "resnet: FrozenBatchNorm2d expects input [N, ",
        num_features_,
        ", H, W], got ",
        x.sizes());
    const auto [scale, shift] =
        batch_norm_affine(running_mean, running_var, weight, bias, eps_);
    return x * scale.reshape({1, -1, 1, 1}).to(x.scalar_type()) +
        shift.reshape({1, -1, 1, 1}).to(x.scalar_type());
  }

  /// Prints `resnet::FrozenBatchNorm2d(C, eps=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::FrozenBatchNorm2d(" << num_features_ << ", eps=" << eps_
           << ")";
  }

  /// The number of channels C.
  int64_t num_features() const {
    return num_features_;
  }

  /// What is added to the variance before its square root.
  double eps() const {
    return eps_;
  }

  /// [C] the scale (gamma), a buffer.
  torch::Tensor weight;
  /// [C] the shift (beta), a buffer.
  torch::Tensor bias;
  /// [C] the mean the input is normalized with, a buffer.
  torch::Tensor running_mean;
  /// [C] the variance the input is normalized with, a buffer.
  torch::Tensor running_var;

 private:
  int64_t num_features_;
  double eps_;
};

TORCH_MODULE(FrozenBatchNorm2d);

/// How a block builds a normalization layer of type `Norm` (a module holder
/// such as `torch::nn::BatchNorm2d`) for `channels` channels. Specialize it
/// to use another layer.
template <class Norm>
struct NormTraits {
  /// `Norm(channels)`: the layer with its default options.
  static Norm make(int64_t channels) {
    return Norm(channels);
  }
};

/// Group normalization with 32 groups (Wu and He 2018), or fewer where the
/// channel count is not a multiple of 32 (gcd of 32 and the channels).
template <>
struct NormTraits<torch::nn::GroupNorm> {
  /// A GroupNorm of gcd(32, channels) groups over `channels` channels.
  static torch::nn::GroupNorm make(int64_t channels) {
    return torch::nn::GroupNorm(
        torch::nn::GroupNormOptions(std::gcd<int64_t>(32, channels), channels));
  }
};

namespace detail {

/// The scale of a normalization layer: its `weight` parameter, or its
/// `weight` buffer for frozen layers. Undefined if it has neither.
inline torch::Tensor norm_weight(torch::nn::Module& norm) {
  // The dicts are copies: keep them alive while their entries are read.
  const auto parameters = norm.named_parameters(/*recurse=*/false);
  if (const auto* p = parameters.find("weight")) {
    return *p;
  }
  const auto buffers = norm.named_buffers(/*recurse=*/false);
  if (const auto* b = buffers.find("weight")) {
    return *b;
  }
  return {};
}

/// Sets the scale of a normalization layer to zero, so that a residual branch
/// ending in it starts as zero.
inline void zero_norm_weight(torch::nn::Module& norm) {
  auto w = norm_weight(norm);
  TORCH_CHECK(
      w.defined(),
      "resnet: zero_init_residual needs a normalization layer with a 'weight', ",
      norm.name(),
      " has none");
  torch::NoGradGuard no_grad;
  w.zero_();
}

} // namespace detail
} // namespace resnet
