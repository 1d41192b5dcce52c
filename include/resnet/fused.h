#pragma once

// The modules of fused inference: a convolution with a batch norm folded into
// it (`FusedConv2d`), a residual block of them (`FusedBlock`) and the network
// (`InferenceResNet`), with the folding itself. Blocks and networks make
// their fused copies with `fused()`; `fuse_for_inference` in
// <resnet/inference.h> is the entry point. The CPU kernels are in
// <resnet/detail/onednn_fused.h>.

#include <resnet/detail/layers.h>
#include <resnet/detail/onednn_fused.h>
#include <resnet/norm.h>
#include <resnet/options.h>

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

struct FuseOptions {
  /// On the CPU in float32, run the network with oneDNN and weights reordered
  /// for it once: `onednn_fused` decides how. Has no effect where LibTorch
  /// lacks oneDNN, on other devices or dtypes; `false` runs ATen's dense
  /// kernels everywhere.
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
    if (onednn_fused_ && detail::onednn_takes(x) &&
        weight.scalar_type() == torch::kFloat32) {
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

  bool uses_onednn_fused() const {
    return onednn_fused_;
  }

  /// Whether a convolution followed by ReLU runs as one cuDNN call on CUDA
  /// inputs (float32, float16, bfloat16). Off by default; turns itself off
  /// where cuDNN has no fused kernel for the inputs it gets.
  void use_cudnn_fused(bool on) {
    cudnn_fused_ = on;
  }

  bool uses_cudnn_fused() const {
    return cudnn_fused_;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::FusedConv2d(" << weight.size(1) * geometry_.groups
           << ", " << weight.size(0) << ", kernel_size=" << weight.size(2)
           << "x" << weight.size(3) << ", stride=" << geometry_.stride[0]
           << ")";
  }

  torch::Tensor weight;
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
        sizes.equals(packed_.input_sizes);
  }

  void remember_source(CpuKernels kernels, c10::IntArrayRef sizes) {
    packed_.kernels = kernels;
    packed_.source = weight;
    packed_.version = weight._version();
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

/// A residual block after folding: `conv1 ... convK` (ReLU between them), a
/// shortcut (`downsample`, zero padding or identity), addition, ReLU.
class FusedBlockImpl : public torch::nn::Cloneable<FusedBlockImpl> {
 public:
  /// `zero_pad_stride` > 0 marks a parameter-free zero-padding shortcut of
  /// that stride.
  FusedBlockImpl(
      std::vector<FusedConv2d> block_convs,
      FusedConv2d shortcut,
      int64_t zero_pad_stride)
      : initial_convs_(std::move(block_convs)),
        initial_downsample_(std::move(shortcut)),
        zero_pad_stride_(zero_pad_stride) {
    TORCH_CHECK(
        !initial_convs_.empty(), "resnet: a fused block needs a convolution");
    reset();
  }

  void reset() override {
    convs.clear();
    for (size_t i = 0; i < initial_convs_.size(); ++i) {
      convs.push_back(
          register_module("conv" + std::to_string(i + 1), initial_convs_[i]));
    }
    downsample = initial_downsample_.is_empty()
        ? nullptr
        : register_module("downsample", initial_downsample_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto out = x;
    for (size_t i = 0; i + 1 < convs.size(); ++i) {
      out = convs[i]->forward(out, PostOp::Relu);
    }
    auto& last = *convs.back();
    // A shortcut made here is overwritten with the block's output; the
    // block's input (an identity shortcut) is left alone.
    const bool fresh = !downsample.is_empty() || zero_pad_stride_ != 0;
    return last.forward(
        out, PostOp::AddRelu, identity(x, last.weight.size(0)), fresh);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::FusedBlock(convs=" << convs.size() << ")";
  }

  std::vector<FusedConv2d> convs;
  FusedConv2d downsample{nullptr};

 private:
  torch::Tensor identity(const torch::Tensor& x, int64_t out_channels) {
    if (!downsample.is_empty()) {
      return downsample(x);
    }
    if (zero_pad_stride_ == 0) {
      return x;
    }
    // oneDNN tensors cannot be sliced: pad a dense copy.
    if (x.is_mkldnn()) {
      return detail::zero_pad_shortcut(
                 x.to_dense(), zero_pad_stride_, out_channels)
          .to_mkldnn();
    }
    return detail::zero_pad_shortcut(x, zero_pad_stride_, out_channels);
  }

  std::vector<FusedConv2d> initial_convs_;
  FusedConv2d initial_downsample_;
  int64_t zero_pad_stride_;
};

TORCH_MODULE(FusedBlock);

/// An inference-only ResNet made by `fuse_for_inference`: the same function
/// as the network it came from in eval mode, with every batch norm folded
/// into a convolution. Its state keeps torchvision's names less the norms:
/// `conv1.weight`, `conv1.bias`, `layer1.0.conv1.weight`, ...,
/// `layer2.0.downsample.weight`, `fc.weight`. `train()` is refused.
class InferenceResNetImpl : public torch::nn::Module {
 public:
  /// What the network checks its inputs against and how it runs.
  struct Layout {
    /// Input channels.
    int64_t in_channels = 3;
    /// Smallest input height and width.
    int64_t total_stride = 1;
    /// Whether the stem ends with a 3x3, stride-2 max pooling.
    bool max_pool = false;
    /// How float32 CPU inputs run.
    CpuKernels cpu_kernels = CpuKernels::Aten;
    /// Whether CUDA inputs run with cuDNN's fused convolutions.
    bool cudnn_fused = false;
  };

  /// Assembles the network from folded parts; `fc` may be empty.
  InferenceResNetImpl(
      FusedConv2d stem,
      std::vector<torch::nn::Sequential> layers,
      torch::nn::Linear classifier,
      Layout layout)
      : layout_(layout) {
#if !AT_MKLDNN_ENABLED()
    layout_.cpu_kernels = CpuKernels::Aten;
#endif
    if (layout_.cpu_kernels == CpuKernels::OneDnnFused &&
        !detail::OneDnnFused::available()) {
      layout_.cpu_kernels = CpuKernels::OneDnnLayout;
    }
    conv1 = register_module("conv1", std::move(stem));
    for (size_t i = 0; i < layers.size(); ++i) {
      stages.push_back(
          register_module("layer" + std::to_string(i + 1), layers[i]));
    }
    if (!classifier.is_empty()) {
      fc = register_module("fc", std::move(classifier));
    }
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* conv = module->as<FusedConv2dImpl>()) {
        conv->use_onednn_fused(layout_.cpu_kernels == CpuKernels::OneDnnFused);
        conv->use_cudnn_fused(layout_.cudnn_fused);
      }
    }
    torch::nn::Module::train(false);
  }

  /// Logits `[N, num_classes]` (pooled features when there is no `fc`).
  torch::Tensor forward(const torch::Tensor& x) {
    return detail::classifier_head(run_features(x), fc);
  }

  /// The last stage's output, before pooling.
  torch::Tensor forward_features(const torch::Tensor& x) {
    auto out = run_features(x);
    return out.is_mkldnn() ? out.to_dense() : out;
  }

  /// Inference only: `train(false)` is accepted, `train(true)` refused.
  void train(bool on = true) override {
    TORCH_CHECK(
        !on,
        "resnet: a fused network is inference-only (its batch norms are folded "
        "into constants); train the network it was made from");
    torch::nn::Module::train(false);
  }

  /// Whether a float32 CPU input runs with oneDNN (in either way).
  bool uses_mkldnn() const {
    return layout_.cpu_kernels != CpuKernels::Aten;
  }

  /// How a float32 CPU input runs.
  CpuKernels cpu_kernels() const {
    return layout_.cpu_kernels;
  }

  /// Whether a float32 CPU input runs with oneDNN's fused convolutions:
  /// `cpu_kernels()` is `CpuKernels::OneDnnFused`, and no convolution has
  /// fallen back to ATen's kernels.
  bool uses_onednn_fused() const {
    return layout_.cpu_kernels == CpuKernels::OneDnnFused &&
        every_conv(
               [](const FusedConv2dImpl& c) { return c.uses_onednn_fused(); });
  }

  /// Whether a CUDA input runs with cuDNN's fused convolutions (where the
  /// dtype is one cuDNN fuses and LibTorch has cuDNN): as `FuseOptions`
  /// asked, and no convolution has fallen back to ATen's kernels.
  bool uses_cudnn_fused() const {
    return layout_.cudnn_fused && every_conv([](const FusedConv2dImpl& c) {
             return c.uses_cudnn_fused();
           });
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::InferenceResNet(stages=" << stages.size()
           << ", cpu_kernels=" << to_string(layout_.cpu_kernels)
           << ", cudnn_fused=" << (layout_.cudnn_fused ? "true" : "false")
           << ")";
  }

  FusedConv2d conv1{nullptr};
  /// layer1 ... layerN, each a sequence of `FusedBlock`s.
  std::vector<torch::nn::Sequential> stages;
  torch::nn::Linear fc{nullptr};

 private:
  template <class Predicate>
  bool every_conv(Predicate holds) const {
    for (const auto& module : modules(/*include_self=*/false)) {
      if (const auto* conv = module->as<FusedConv2dImpl>()) {
        if (!holds(*conv)) {
          return false;
        }
      }
    }
    return true;
  }

  torch::Tensor run_features(const torch::Tensor& x) {
    detail::check_network_input(
        x, layout_.in_channels, layout_.total_stride, layout_.max_pool);
    TORCH_CHECK(
        x.scalar_type() == conv1->weight.scalar_type() &&
            x.device() == conv1->weight.device(),
        "resnet: input is ",
        x.scalar_type(),
        " on ",
        x.device(),
        " but the network is ",
        conv1->weight.scalar_type(),
        " on ",
        conv1->weight.device());
    const bool cpu_float = detail::onednn_takes(x);
    auto input = x;
    if (cpu_float && layout_.cpu_kernels == CpuKernels::OneDnnLayout) {
      input = x.contiguous().to_mkldnn();
    } else if (cpu_float && layout_.cpu_kernels == CpuKernels::OneDnnFused) {
      input = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    auto out = conv1->forward(input, PostOp::Relu);
    if (layout_.max_pool) {
      out = detail::stem_max_pool(out);
    }
    for (auto& stage : stages) {
      out = stage->forward(out);
    }
    return out;
  }

  Layout layout_;
};

/// Module holder of `InferenceResNetImpl`.
class InferenceResNet : public torch::nn::ModuleHolder<InferenceResNetImpl> {
 public:
  using torch::nn::ModuleHolder<InferenceResNetImpl>::ModuleHolder;
  using Impl = InferenceResNetImpl;
};

namespace detail {

// The scale and shift that a batch norm in eval mode applies per channel.
inline std::pair<torch::Tensor, torch::Tensor> norm_affine(
    const torch::nn::Module& norm,
    const std::string& where) {
  torch::Tensor mean, var, gamma, beta;
  double eps = 0;
  if (const auto* bn = norm.as<torch::nn::BatchNorm2dImpl>()) {
    TORCH_CHECK(
        bn->options.track_running_stats() && bn->running_mean.defined(),
        "resnet: cannot fold ",
        where,
        ": a batch norm without running statistics normalizes with each "
        "batch's own");
    mean = bn->running_mean;
    var = bn->running_var;
    gamma = bn->weight;
    beta = bn->bias;
    eps = bn->options.eps();
  } else if (const auto* frozen = norm.as<FrozenBatchNorm2dImpl>()) {
    mean = frozen->running_mean;
    var = frozen->running_var;
    gamma = frozen->weight;
    beta = frozen->bias;
    eps = frozen->eps();
  } else {
    TORCH_CHECK(
        false,
        "resnet: fuse_for_inference folds BatchNorm2d and FrozenBatchNorm2d; ",
        where,
        " is ",
        norm.name(),
        ", which depends on its input and cannot be folded");
  }
  const auto to64 = [](const torch::Tensor& t) {
    return t.defined() ? t.detach().to(torch::kFloat64) : t;
  };
  const auto affine =
      batch_norm_affine(to64(mean), to64(var), to64(gamma), to64(beta), eps);
  return {affine.scale, affine.shift};
}

struct ExplicitPadding {
  std::vector<int64_t>* out;
  void operator()(const torch::ExpandingArray<2>& p) const {
    out->assign(p->begin(), p->end());
  }
  template <class Mode>
  void operator()(const Mode&) const {}
};

struct IsZerosMode {
  bool operator()(const torch::enumtype::kZeros&) const {
    return true;
  }
  template <class Mode>
  bool operator()(const Mode&) const {
    return false;
  }
};

// Folds `norm` into `conv`: W' = W * scale, b' = b * scale + shift, computed
// in float64 and stored in the convolution's dtype.
inline FusedConv2d fold(
    const torch::nn::Module& conv_module,
    const torch::nn::Module& norm,
    const std::string& where) {
  const auto* conv = conv_module.as<torch::nn::Conv2dImpl>();
  TORCH_CHECK(
      conv != nullptr,
      "resnet: fuse_for_inference expected a Conv2d at ",
      where,
      ", found ",
      conv_module.name());
  torch::NoGradGuard no_grad;
  const auto [scale, shift] = norm_affine(norm, where);
  const auto w = conv->weight.detach();
  auto weight = (w.to(torch::kFloat64) * scale.reshape({-1, 1, 1, 1}))
                    .to(w.scalar_type())
                    .contiguous();
  auto bias = shift;
  if (conv->bias.defined()) {
    bias = bias + conv->bias.detach().to(torch::kFloat64) * scale;
  }
  bias = bias.to(w.scalar_type()).contiguous();
  const auto& o = conv->options;
  // The options hold variants (c10's in LibTorch 1.x, std's in 2.x): visit
  // them through argument-dependent lookup.
  std::vector<int64_t> padding;
  visit(ExplicitPadding{&padding}, o.padding());
  const bool zeros = visit(IsZerosMode{}, o.padding_mode());
  TORCH_CHECK(
      !padding.empty() && zeros,
      "resnet: cannot fold ",
      where,
      ": only explicit zero padding is supported");
  return FusedConv2d(
      weight,
      bias,
      std::vector<int64_t>(o.stride()->begin(), o.stride()->end()),
      padding,
      std::vector<int64_t>(o.dilation()->begin(), o.dilation()->end()),
      o.groups());
}

// The kernels a fused network runs float32 CPU inputs with.
inline CpuKernels cpu_kernels_for(const FuseOptions& options) {
  if (!options.mkldnn()) {
    return CpuKernels::Aten;
  }
  return options.onednn_fused() ? CpuKernels::OneDnnFused
                                : CpuKernels::OneDnnLayout;
}

// What `fuse_for_inference` cannot fold in a network built with `o`, as a
// list for its message; empty if it can fold everything.
inline std::string unfusable_parts(const ResNetOptions& o) {
  std::string parts;
  const auto add = [&parts](const std::string& part) {
    parts += (parts.empty() ? "" : ", ") + part;
  };
  if (o.stem_type() != StemType::Default) {
    add(std::string("the deep stem (StemType::") + to_string(o.stem_type()) +
        ")");
  }
  if (o.avg_down()) {
    add("averaging shortcuts (avg_down)");
  }
  if (o.attention() != Attention::None) {
    add(std::string("attention modules (Attention::") +
        to_string(o.attention()) + ")");
  }
  return parts;
}

} // namespace detail

} // namespace resnet
