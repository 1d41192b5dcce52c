#pragma once

// Fusing a network for inference: every batch norm folded into the
// convolution before it, computed from the parts the network and its blocks
// offer (`parts()`), into the modules of <resnet/inference/fused.h>.

#include <resnet/inference/fused.h>
#include <resnet/model/blocks.h>
#include <resnet/model/network.h>
#include <resnet/model/norm.h>
#include <resnet/model/options.h>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace resnet {
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

// Folds a block from its parts; `where` names it in messages.
inline FusedBlock fold_block(
    const BlockParts& parts,
    const std::string& where) {
  TORCH_CHECK(
      parts.attention == nullptr,
      "resnet: cannot fuse ",
      where,
      ": attention modules depend on their input and are not folded");
  const auto& shortcut = parts.shortcut;
  TORCH_CHECK(
      shortcut.kind != ShortcutKind::AveragedProjection,
      "resnet: cannot fuse ",
      where,
      ": averaging shortcuts (avg_down) are not folded");
  std::vector<FusedConv2d> convs;
  for (size_t i = 0; i < parts.layers.size(); ++i) {
    const auto& layer = parts.layers[i];
    convs.push_back(fold(
        *layer.conv, *layer.norm, where + ".conv" + std::to_string(i + 1)));
  }
  FusedConv2d projection{nullptr};
  int64_t zero_pad_stride = 0;
  if (shortcut.kind == ShortcutKind::Projection) {
    projection = fold(
        *shortcut.projection.conv,
        *shortcut.projection.norm,
        where + ".downsample");
  } else if (shortcut.kind == ShortcutKind::ZeroPad) {
    zero_pad_stride = shortcut.stride;
  }
  return FusedBlock(std::move(convs), projection, zero_pad_stride);
}

} // namespace detail

/// An inference-only copy of a residual block (`BasicBlock<>`,
/// `Bottleneck<>` or their `Impl`) with every norm folded into the
/// convolution before it: the same function as the block in eval mode.
/// `where` names the block in messages (its kind by default).
template <class Block>
FusedBlock fuse_block(const Block& block, const std::string& where = "") {
  if constexpr (std::
                    is_base_of_v<torch::detail::ModuleHolderIndicator, Block>) {
    TORCH_CHECK(!block.is_empty(), "resnet: fuse_block got an empty block");
    return fuse_block(*block, where);
  } else {
    return detail::fold_block(
        block.parts(), where.empty() ? to_string(Block::kind) : where);
  }
}

/// Whether `fuse_for_inference` takes `model`: batch norms it can fold
/// (not GroupNorm) and the one-convolution stem (not a deep stem).
inline bool fusable(const ResNetBaseImpl& model) {
  return detail::unfusable_parts(model.options()).empty() &&
      model.parts().stem.conv != nullptr;
}

/// An inference-only copy of `model` with every batch norm folded into the
/// convolution before it, on the model's device and dtype; `model` is left
/// as it was. Its outputs equal `model`'s in eval mode up to rounding (folding
/// is computed in float64). Refuses norms that cannot be folded (GroupNorm).
///
///   auto fast = resnet::fuse_for_inference(*model);
///   torch::InferenceMode guard;
///   auto logits = fast(images);
inline InferenceResNet fuse_for_inference(
    const ResNetBaseImpl& model,
    const FuseOptions& options = {}) {
  const auto unfusable = detail::unfusable_parts(model.options());
  TORCH_CHECK(
      unfusable.empty(),
      "resnet: fuse_for_inference folds batch norms into the torchvision "
      "layout and cannot fuse ",
      unfusable,
      "; run the network itself in eval mode");
  const auto parts = model.parts();
  TORCH_CHECK(
      parts.stem.conv != nullptr,
      "resnet: fuse_for_inference cannot fuse a deep stem");
  auto stem = detail::fold(*parts.stem.conv, *parts.stem.norm, "conv1");
  std::vector<torch::nn::Sequential> stages;
  for (size_t i = 0; i < parts.stages.size(); ++i) {
    torch::nn::Sequential stage;
    for (size_t j = 0; j < parts.stages[i].size(); ++j) {
      stage->push_back(detail::fold_block(
          parts.stages[i][j],
          "layer" + std::to_string(i + 1) + "." + std::to_string(j)));
    }
    stages.push_back(stage);
  }
  torch::nn::Linear classifier{nullptr};
  if (parts.fc != nullptr) {
    classifier =
        torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(
            parts.fc->clone(parts.fc->weight.device())));
    for (auto& p : classifier->parameters()) {
      p.set_requires_grad(false);
    }
  }
  InferenceResNetImpl::Layout layout;
  layout.in_channels = parts.in_channels;
  layout.total_stride = parts.total_stride;
  layout.max_pool = parts.max_pool;
  layout.cpu_kernels = detail::cpu_kernels_for(options);
  layout.cudnn_fused = options.cudnn_fused();
  return InferenceResNet(
      std::move(stem), std::move(stages), std::move(classifier), layout);
}

/// `fuse_for_inference` for a module holder (`ResNet<Block>`, `AnyResNet`).
template <class Impl>
InferenceResNet fuse_for_inference(
    const torch::nn::ModuleHolder<Impl>& model,
    const FuseOptions& options = {}) {
  TORCH_CHECK(
      !model.is_empty(), "resnet: fuse_for_inference got an empty model");
  return fuse_for_inference(
      static_cast<const ResNetBaseImpl&>(*model), options);
}

} // namespace resnet
