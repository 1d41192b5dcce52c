#pragma once

// The modules of fused inference built from `FusedConv2d`s: a residual block
// (`FusedBlock`) and the network (`InferenceResNet`). `fuse_for_inference`
// in <resnet/inference/fold.h> makes them from a network.

#include <resnet/inference/fused_conv.h>
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

  /// Registers the convolutions as conv1 ... convK and the shortcut
  /// convolution, if any, as downsample.
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

  /// Applies the block to `x` [N, C, H, W].
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

  /// Prints `resnet::FusedBlock(convs=K)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::FusedBlock(convs=" << convs.size() << ")";
  }

  /// The stride of a zero-padding shortcut; 0 for an identity or a
  /// convolution.
  int64_t zero_pad_stride() const {
    return zero_pad_stride_;
  }

  /// conv1 ... convK of the main path, in order.
  std::vector<FusedConv2d> convs;
  /// The shortcut's folded 1x1 convolution; empty for an identity or
  /// zero-padding shortcut.
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
      return functional::zero_pad_shortcut(
                 x.to_dense(), zero_pad_stride_, out_channels)
          .to_mkldnn();
    }
    return functional::zero_pad_shortcut(x, zero_pad_stride_, out_channels);
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
    return functional::classifier_head(run_features(x), fc);
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

  /// What the network checks its inputs against and how it runs.
  const Layout& layout() const {
    return layout_;
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

  /// Prints the number of stages and the kernels in use.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::InferenceResNet(stages=" << stages.size()
           << ", cpu_kernels=" << to_string(layout_.cpu_kernels)
           << ", cudnn_fused=" << (layout_.cudnn_fused ? "true" : "false")
           << ")";
  }

  /// The stem convolution with its norm folded in (followed by ReLU).
  FusedConv2d conv1{nullptr};
  /// layer1 ... layerN, each a sequence of `FusedBlock`s.
  std::vector<torch::nn::Sequential> stages;
  /// The classifier, a copy of the model's; empty for a headless network.
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
    functional::check_network_input(
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
    auto input = x;
    if (detail::onednn_takes(x) &&
        layout_.cpu_kernels == CpuKernels::OneDnnLayout) {
      input = x.contiguous().to_mkldnn();
    } else if (
        detail::onednn_fused_takes(x) &&
        layout_.cpu_kernels == CpuKernels::OneDnnFused) {
      input = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    auto out = conv1->forward(input, PostOp::Relu);
    if (layout_.max_pool) {
      out = functional::stem_max_pool(out);
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
  /// The module type this holder owns.
  using Impl = InferenceResNetImpl;
};

} // namespace resnet
