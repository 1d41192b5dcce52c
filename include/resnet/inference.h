#pragma once

// Faster inference: a copy of a network with every batch norm folded into the
// convolution before it (`fuse_for_inference`). On the CPU it runs with
// oneDNN and weights prepacked once: each convolution with its ReLU and
// residual addition in one call where LibTorch has the fused operators
// (2.x), in oneDNN's blocked layout otherwise. The modules are in
// <resnet/fused.h>.

#include <resnet/fused.h>
#include <resnet/network.h>

#include <torch/nn/pimpl.h>

namespace resnet {

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
  return model.fused(options);
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
