#pragma once

// One switch for inference on the CPU: the fused network in float32 or
// bfloat16, or its int8 form, behind one call; and which of them this CPU
// runs faster than float32, read from its instruction sets.
//
//   auto fused = resnet::fuse_for_inference(*model);
//   resnet::CpuInference net(fused, resnet::Precision::BFloat16);
//   auto logits = net(images); // float32 in, float32 logits out
//
// Where the CPU lacks what makes a precision fast, it still runs, slower
// than float32: `cpu_precision_fit` says so, and why.

#include <resnet/cpu_features.h>
#include <resnet/inference/fused.h>
#include <resnet/inference/precision.h>
#include <resnet/inference/quantize.h>

#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <optional>
#include <string>
#include <utility>

namespace resnet {

/// The number format a network computes in.
enum class Precision {
  /// float32 weights and activations.
  Float32,
  /// bfloat16 weights and activations, float32 accumulation.
  BFloat16,
  /// int8 weights, uint8 activations (`quantize`).
  Int8,
};

/// "fp32", "bf16" or "int8".
inline const char* to_string(Precision p) {
  switch (p) {
    case Precision::Float32:
      return "fp32";
    case Precision::BFloat16:
      return "bf16";
    case Precision::Int8:
      return "int8";
  }
  return "?";
}

/// The precision named "fp32", "bf16" or "int8"; a `c10::Error` otherwise.
inline Precision parse_precision(const std::string& name) {
  for (auto p : {Precision::Float32, Precision::BFloat16, Precision::Int8}) {
    if (name == to_string(p)) {
      return p;
    }
  }
  TORCH_CHECK(
      false, "resnet: unknown precision '", name, "' (fp32, bf16 or int8)");
}

/// Whether a precision suits this CPU: `faster` when it runs the fused
/// network faster than float32 does (always for float32 itself), and why.
struct PrecisionFit {
  /// Faster than float32 here (or float32).
  bool faster = true;
  /// The instruction sets (or their absence) that decide it.
  std::string reason;
};

/// How `p` runs on a CPU with `features` (this one by default). bfloat16
/// is fast where the CPU multiplies bfloat16 itself: AMX-BF16 tiles or
/// AVX512-BF16 dot products (1.6-1.9x float32 on Zen 4, README); with
/// AVX-512 or AVX2 alone oneDNN converts and runs it slower than float32.
/// int8 is fast with VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8) and where
/// LibTorch has oneDNN's int8 operators (`int8_available()`); on AVX2
/// alone it about ties float32.
inline PrecisionFit cpu_precision_fit(
    Precision p,
    const CpuFeatures& features = cpu_features()) {
  switch (p) {
    case Precision::Float32:
      return {true, "float32 is the reference"};
    case Precision::BFloat16:
      if (features.amx_bf16) {
        return {true, "AMX-BF16 runs bfloat16 convolutions"};
      }
      if (features.avx512_bf16) {
        return {true, "AVX512-BF16 runs bfloat16 dot products"};
      }
      return {
          false,
          "this CPU has no AMX-BF16 or AVX512-BF16: bfloat16 convolutions "
          "run slower than float32 here"};
    case Precision::Int8:
      if (!int8_available()) {
        return {
            false,
            "this LibTorch lacks oneDNN's int8 convolution "
            "(onednn::qconv2d_pointwise, LibTorch 2.x)"};
      }
      if (features.amx_int8) {
        return {true, "AMX-INT8 runs int8 convolutions"};
      }
      if (features.avx512_vnni || features.avx_vnni) {
        return {true, "VNNI runs int8 dot products"};
      }
      return {
          false,
          "this CPU has no VNNI or AMX-INT8: int8 convolutions run about as "
          "fast as float32 here"};
  }
  return {false, "unknown precision"};
}

/// The fastest precision for the fused network on a CPU with `features`:
/// int8 where it fits and `int8_possible` (calibration images or a saved
/// int8 network are at hand), else bfloat16 where it fits, else float32.
/// Never one that is slower than float32 there.
inline Precision fastest_cpu_precision(
    bool int8_possible,
    const CpuFeatures& features = cpu_features()) {
  if (int8_possible && cpu_precision_fit(Precision::Int8, features).faster) {
    return Precision::Int8;
  }
  if (cpu_precision_fit(Precision::BFloat16, features).faster) {
    return Precision::BFloat16;
  }
  return Precision::Float32;
}

/// A network for inference on the CPU in one precision: float32 images in
/// (normalized as for the float network), float32 logits out. float32 and
/// bfloat16 run the fused network (`fuse_for_inference`; for bfloat16 its
/// weights are cast and prepacked in bfloat16), int8 the network of
/// `quantize` or `load_quantized`.
class CpuInference {
 public:
  /// `fused` in float32, or cast to bfloat16 (in place: the network is
  /// shared). int8 needs calibration: make it with `quantize`.
  CpuInference(InferenceResNet fused, Precision precision)
      : precision_(precision), fused_(std::move(fused)) {
    TORCH_CHECK(
        precision != Precision::Int8,
        "resnet: an int8 network comes from resnet::quantize (calibration "
        "images) or resnet::load_quantized");
    TORCH_CHECK(fused_, "resnet: CpuInference needs a fused network");
    fused_->eval();
    cast_floating(
        *fused_,
        precision == Precision::BFloat16 ? torch::kBFloat16 : torch::kFloat32);
  }

  /// The int8 network.
  explicit CpuInference(Int8ResNet int8)
      : precision_(Precision::Int8), int8_(std::move(int8)) {}

  /// The precision it computes in.
  Precision precision() const {
    return precision_;
  }

  /// Float32 logits of float32 `images` [N, C, H, W] on the CPU.
  torch::Tensor operator()(const torch::Tensor& images) const {
    TORCH_CHECK(
        images.is_cpu() && images.scalar_type() == torch::kFloat,
        "resnet: CpuInference takes float32 CPU images, got ",
        images.scalar_type(),
        " on ",
        images.device());
    if (int8_) {
      return int8_->forward(images);
    }
    c10::InferenceMode guard;
    if (precision_ == Precision::BFloat16) {
      return fused_->forward(images.to(torch::kBFloat16)).to(torch::kFloat);
    }
    return fused_->forward(images);
  }

 private:
  Precision precision_;
  mutable InferenceResNet fused_{nullptr};
  std::optional<Int8ResNet> int8_;
};

} // namespace resnet
