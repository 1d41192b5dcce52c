#pragma once

// A convolution with a batch norm folded into it (`FusedConv2d`), run by
// oneDNN's fused kernels on the CPU (<resnet/inference/detail/onednn_fused.h>)
// or cuDNN's on a GPU, and the options that choose them (`FuseOptions`).

#include <resnet/inference/detail/onednn_fused.h>
#include <resnet/model/functional.h>

#include <ATen/Config.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

/// Options of `fuse_for_inference`: which fused kernels the network may use
/// on the CPU and on CUDA devices. All on by default.
struct FuseOptions {
  /// On the CPU in float32 (and bfloat16 with `onednn_fused`), run the
  /// network with oneDNN and weights reordered for it once: `onednn_fused`
  /// decides how. Has no effect where LibTorch lacks oneDNN, on other
  /// devices or dtypes; `false` runs ATen's dense kernels everywhere.
  TORCH_ARG(bool, mkldnn) = true;
  /// Where LibTorch registers oneDNN's fused convolutions (2.x): each
  /// convolution with its bias, ReLU and residual addition is one oneDNN
  /// call on channels-last tensors. Otherwise, or when `false`, tensors stay
  /// in oneDNN's blocked layout and ReLU and addition are separate calls
  /// (what `torch.jit.optimize_for_inference` does).
  TORCH_ARG(bool, onednn_fused) = true;
  /// On CUDA devices in float32, float16 or bfloat16 where LibTorch has
  /// cuDNN: each convolution followed by ReLU, with its bias and the block's
  /// residual addition, is one cuDNN call (ATen's `cudnn_convolution_relu`
  /// and `cudnn_convolution_add_relu`). `false` runs the convolution, the
  /// addition and the ReLU as separate kernels.
  TORCH_ARG(bool, cudnn_fused) = true;
};

/// How a fused network runs float32 inputs on the CPU.
enum class CpuKernels {
  /// ATen's dense convolutions, with ReLU and addition separate.
  Aten,
  /// oneDNN convolutions on tensors in oneDNN's blocked layout.
  OneDnnLayout,
  /// oneDNN convolutions with bias, ReLU and addition fused into each call,
  /// on dense channels-last tensors.
  OneDnnFused,
};

/// "aten", "onednn-layout" or "onednn-fused".
inline const char* to_string(CpuKernels kernels) {
  switch (kernels) {
    case CpuKernels::Aten:
      return "aten";
    case CpuKernels::OneDnnLayout:
      return "onednn-layout";
    case CpuKernels::OneDnnFused:
      return "onednn-fused";
  }
  return "?";
}

using detail::PostOp;

namespace detail {

// Whether `x` is what the oneDNN kernels of a fused network take: a dense
// (not oneDNN-layout) float32 CPU tensor that no gradient will flow through.
inline bool onednn_takes(const torch::Tensor& x) {
  return x.is_cpu() && !x.is_mkldnn() && x.scalar_type() == torch::kFloat32 &&
      !(torch::GradMode::is_enabled() && x.requires_grad());
}

// Whether `x` is what oneDNN's fused convolutions take: as `onednn_takes`,
// in float32 or bfloat16 (bf16 weights and activations, float32
// accumulation; fast where the CPU has AMX-BF16 or AVX512-BF16, see
// cpu_precision.h).
inline bool onednn_fused_takes(const torch::Tensor& x) {
  return x.is_cpu() && !x.is_mkldnn() &&
      (x.scalar_type() == torch::kFloat32 ||
       x.scalar_type() == torch::kBFloat16) &&
      !(torch::GradMode::is_enabled() && x.requires_grad());
}

// Whether a convolution of `x` with `weight` (adding `other` if defined)
// can be one of cuDNN's fused calls: CUDA tensors of one floating dtype
// that cuDNN fuses, with no gradient to flow (the calls have none).
inline bool cudnn_takes(
    const torch::Tensor& x,
    const torch::Tensor& weight,
    const torch::Tensor& other) {
  if (!x.is_cuda()) {
    return false;
  }
  const auto dtype = x.scalar_type();
  const bool grad = torch::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() ||
       (other.defined() && other.requires_grad()));
  return x.dim() == 4 && weight.device() == x.device() &&
      weight.scalar_type() == dtype &&
      (dtype == torch::kFloat32 || dtype == torch::kFloat16 ||
       dtype == torch::kBFloat16) &&
      (!other.defined() ||
       (other.scalar_type() == dtype && other.device() == x.device())) &&
      !grad && at::globalContext().userEnabledCuDNN() &&
      at::globalContext().hasCuDNN();
}

} // namespace detail

/// A convolution with a batch norm folded into its weight and bias. Its state
/// is two buffers, `weight` and `bias`; nothing is trained.
class FusedConv2dImpl : public torch::nn::Cloneable<FusedConv2dImpl> {
 public:
  /// Takes the folded `weight` [out, in / groups, kh, kw] and `bias` [out]
  /// with the convolution's geometry.
  FusedConv2dImpl(
      torch::Tensor folded_weight,
      torch::Tensor folded_bias,
      std::vector<int64_t> stride,
      std::vector<int64_t> padding,
      std::vector<int64_t> dilation,
      int64_t groups)
      : geometry_{std::move(stride), std::move(padding), std::move(dilation), groups},
        initial_weight_(std::move(folded_weight)),
        initial_bias_(std::move(folded_bias)) {
    TORCH_CHECK(
        initial_weight_.dim() == 4 && initial_bias_.dim() == 1 &&
            initial_bias_.size(0) == initial_weight_.size(0),
        "resnet: FusedConv2d expects weight [out, in, kh, kw] and bias [out], "
        "got ",
        initial_weight_.sizes(),
        " and ",
        initial_bias_.sizes());
    TORCH_CHECK(
        geometry_.stride.size() == 2 && geometry_.padding.size() == 2 &&
            geometry_.dilation.size() == 2 && geometry_.groups >= 1,
        "resnet: FusedConv2d expects 2 strides, paddings and dilations and "
        "groups >= 1");
    reset();
  }

  /// Registers the folded weight and bias as buffers and drops any packed
  /// oneDNN weights.
  void reset() override {
    weight = register_buffer("weight", initial_weight_);
    bias = register_buffer("bias", initial_bias_);
    packed_ = {};
  }

  /// The convolution, then `post` (adding `other`, the block's shortcut, for
  /// `PostOp::AddRelu`; with `overwrite_other`, the result may be written
  /// into it). Runs in oneDNN's layout for oneDNN inputs, as one fused
  /// oneDNN call for dense float32 CPU inputs once `use_onednn_fused(true)`,
  /// as one fused cuDNN call for a ReLU post-op on CUDA inputs once
  /// `use_cudnn_fused(true)`, and with ATen's kernels otherwise.
  torch::Tensor forward(
      const torch::Tensor& x,
      PostOp post = PostOp::None,
      const torch::Tensor& other = {},
      bool overwrite_other = false) {
    TORCH_CHECK(
        (post == PostOp::AddRelu) == other.defined(),
        "resnet: FusedConv2d takes a tensor to add exactly for PostOp::AddRelu");
    // cuDNN may find no fused kernel for a configuration (dtype, layout,
    // groups), and oneDNN may refuse one (which, depends on the CPU), that
    // ATen's kernels run: the convolution then runs ATen's kernels from now
    // on, and `uses_cudnn_fused()` / `uses_onednn_fused()` say so. Where ATen
    // refuses too, the input is at fault: its error is the one thrown, and
    // the fused kernels stay in use. Running out of memory is neither.
    if (cudnn_fused_ && post != PostOp::None &&
        detail::cudnn_takes(x, weight, other)) {
      return fused_or_aten(
          cudnn_fused_,
          [&] { return cudnn_forward(x, post, other); },
          x,
          post,
          other);
    }
    if (onednn_fused_ && detail::onednn_fused_takes(x) &&
        weight.scalar_type() == x.scalar_type()) {
      return fused_or_aten(
          onednn_fused_,
          [&] { return onednn_forward(x, post, other, overwrite_other); },
          x,
          post,
          other);
    }
    return aten_forward(x, post, other);
  }

  /// Whether dense float32 CPU inputs run as one fused oneDNN call; refused
  /// where LibTorch lacks the operators (`OneDnnFused::available()`). Off
  /// for good once oneDNN refuses an input that ATen's kernels run.
  void use_onednn_fused(bool on) {
    TORCH_CHECK(
        !on || detail::OneDnnFused::available(),
        "resnet: this LibTorch lacks oneDNN's fused convolution operators");
    onednn_fused_ = on;
  }

  /// Whether dense float32 CPU inputs run as one fused oneDNN call now.
  bool uses_onednn_fused() const {
    return onednn_fused_;
  }

  /// Whether a convolution followed by ReLU runs as one cuDNN call on CUDA
  /// inputs (float32, float16, bfloat16). Off by default; turns itself off
  /// where cuDNN has no fused kernel for the inputs it gets.
  void use_cudnn_fused(bool on) {
    cudnn_fused_ = on;
  }

  /// Whether a ReLU post-op on CUDA inputs runs as one cuDNN call now.
  bool uses_cudnn_fused() const {
    return cudnn_fused_;
  }

  /// Prints `resnet::FusedConv2d(in, out, kernel_size=KxK, stride=S)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::FusedConv2d(" << weight.size(1) * geometry_.groups
           << ", " << weight.size(0) << ", kernel_size=" << weight.size(2)
           << "x" << weight.size(3) << ", stride=" << geometry_.stride[0]
           << ")";
  }

  /// The stride, padding, dilation and groups.
  const detail::ConvGeometry& geometry() const {
    return geometry_;
  }

  /// The folded weight [out, in / groups, kh, kw] (a buffer).
  torch::Tensor weight;
  /// The folded bias [out] (a buffer).
  torch::Tensor bias;

 private:
  // `fused()`; where it throws (running out of memory aside) and ATen's
  // kernels run the input, their result, with `enabled` cleared for good.
  template <class Fused>
  torch::Tensor fused_or_aten(
      bool& enabled,
      Fused&& fused,
      const torch::Tensor& x,
      PostOp post,
      const torch::Tensor& other) {
    try {
      return fused();
    } catch (const c10::OutOfMemoryError&) {
      throw;
    } catch (const c10::Error&) {
      auto y = aten_forward(x, post, other);
      enabled = false;
      return y;
    }
  }

  torch::Tensor onednn_forward(
      const torch::Tensor& x,
      PostOp post,
      const torch::Tensor& other,
      bool overwrite_other) {
    const auto input = x.contiguous(torch::MemoryFormat::ChannelsLast);
    prepack_fused(input.sizes());
    return detail::OneDnnFused::run(
        input,
        packed_.weight,
        bias,
        geometry_,
        post,
        post == PostOp::AddRelu
            ? other.contiguous(torch::MemoryFormat::ChannelsLast)
            : torch::Tensor(),
        overwrite_other);
  }

  torch::Tensor aten_forward(
      const torch::Tensor& x,
      PostOp post,
      const torch::Tensor& other) {
    torch::Tensor y;
    if (x.is_mkldnn()) {
      prepack_layout();
      y = at::mkldnn_convolution(
          x,
          packed_.weight,
          packed_.bias,
          geometry_.padding,
          geometry_.stride,
          geometry_.dilation,
          geometry_.groups);
    } else {
      y = torch::conv2d(
          x,
          weight,
          bias,
          geometry_.stride,
          geometry_.padding,
          geometry_.dilation,
          geometry_.groups);
    }
    if (post == PostOp::AddRelu) {
      y.add_(other);
    }
    if (post != PostOp::None) {
      y.relu_();
    }
    return y;
  }

  torch::Tensor cudnn_forward(
      const torch::Tensor& x,
      PostOp post,
      const torch::Tensor& other) const {
    if (post == PostOp::Relu) {
      return at::cudnn_convolution_relu(
          x,
          weight,
          bias,
          geometry_.stride,
          geometry_.padding,
          geometry_.dilation,
          geometry_.groups);
    }
    return at::cudnn_convolution_add_relu(
        x,
        weight,
        other,
        1,
        bias,
        geometry_.stride,
        geometry_.padding,
        geometry_.dilation,
        geometry_.groups);
  }

  // Whether `packed_` was made from the current `weight` for `kernels` and
  // input `sizes`. Made on first use and again whenever the dense weight has
  // been replaced (e.g. by `to()`) or changed in place.
  bool packed_for(CpuKernels kernels, c10::IntArrayRef sizes) const {
    return packed_.kernels == kernels && packed_.source.defined() &&
        packed_.source.is_same(weight) &&
        packed_.version == weight._version() &&
        packed_.dtype == weight.scalar_type() &&
        sizes.equals(packed_.input_sizes);
  }

  void remember_source(CpuKernels kernels, c10::IntArrayRef sizes) {
    packed_.kernels = kernels;
    packed_.source = weight;
    packed_.version = weight._version();
    // cast_floating replaces the data but not the tensor or its version.
    packed_.dtype = weight.scalar_type();
    packed_.input_sizes = sizes.vec();
  }

  // For oneDNN's blocked layout.
  void prepack_layout() {
    if (packed_for(CpuKernels::OneDnnLayout, {})) {
      return;
    }
#if AT_MKLDNN_ENABLED()
    packed_.weight = at::mkldnn_reorder_conv2d_weight(
        weight.to_mkldnn(),
        geometry_.padding,
        geometry_.stride,
        geometry_.dilation,
        geometry_.groups);
    packed_.bias = bias.to_mkldnn();
    remember_source(CpuKernels::OneDnnLayout, {});
#else
    TORCH_CHECK(false, "resnet: this LibTorch was built without oneDNN");
#endif
  }

  // For the fused operators, which pick the weight's layout by input size.
  void prepack_fused(c10::IntArrayRef input_sizes) {
    if (packed_for(CpuKernels::OneDnnFused, input_sizes)) {
      return;
    }
    packed_.weight =
        detail::OneDnnFused::prepack(weight, geometry_, input_sizes);
    packed_.bias = torch::Tensor();
    remember_source(CpuKernels::OneDnnFused, input_sizes);
  }

  struct Packed {
    // `Aten`: nothing packed yet.
    CpuKernels kernels = CpuKernels::Aten;
    torch::Tensor source;
    int64_t version = -1;
    torch::ScalarType dtype = torch::ScalarType::Undefined;
    std::vector<int64_t> input_sizes;
    torch::Tensor weight;
    torch::Tensor bias;
  };

  detail::ConvGeometry geometry_;
  bool onednn_fused_ = false;
  bool cudnn_fused_ = false;
  torch::Tensor initial_weight_;
  torch::Tensor initial_bias_;
  Packed packed_;
};

TORCH_MODULE(FusedConv2d);

} // namespace resnet
