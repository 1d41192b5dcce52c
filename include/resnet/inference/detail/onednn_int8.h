#pragma once

// The CPU kernels of int8 inference in LibTorch 2.x: oneDNN's quantized
// convolution on plain uint8 activations and int8 weights, with its bias,
// ReLU or the residual addition and ReLU fused (the operators
// `onednn::qconv_prepack` and `onednn::qconv2d_pointwise`, which take plain
// tensors, not the deprecated quantized dtypes). Their arguments have moved
// between releases, so each call is assembled by the argument names of the
// schema this LibTorch registers; a LibTorch without them (1.13) compiles the
// same code and reports them unavailable.

#include <resnet/inference/detail/onednn_fused.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>
#include <c10/util/Optional.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace resnet::detail {

/// The scale and zero point of a uint8 activation: real = scale * (q - zp).
struct QuantParams {
  double scale = 1.0;
  int64_t zero_point = 0;
};

class OneDnnInt8 {
 public:
  /// Whether this LibTorch registers the int8 operators.
  static bool available() {
    return handle(Op::Prepack) && handle(Op::Unary) && handle(Op::Binary);
  }

  /// `weight` (int8 [out, in / groups, kh, kw]) with its per-output-channel
  /// `scales` packed for oneDNN, for inputs quantized with `input` and, where
  /// given, of `input_sizes`.
  static torch::Tensor prepack(
      const torch::Tensor& weight,
      const torch::Tensor& scales,
      QuantParams input,
      const ConvGeometry& g,
      c10::IntArrayRef input_sizes = {}) {
    Named args{
        {"weight", weight.contiguous()},
        {"w_scales", scales},
        {"x_scale", input.scale},
        {"x_zp", input.zero_point},
        {"stride", g.stride},
        {"padding", g.padding},
        {"dilation", g.dilation},
        {"groups", g.groups}};
    if (!input_sizes.empty()) {
      args.emplace_back("x_shape", input_sizes.vec());
    }
    return call(Op::Prepack, std::move(args));
  }

  /// The convolution of `x` (uint8, channels last, quantized with `input`)
  /// with the packed weight, its `scales` and float32 `bias`, then `post`
  /// (for `PostOp::AddRelu`, adding `accum`, uint8 quantized with
  /// `accum_q`, which may be overwritten); uint8 quantized with `output`.
  static torch::Tensor run(
      const torch::Tensor& x,
      QuantParams input,
      const torch::Tensor& packed,
      const torch::Tensor& scales,
      const torch::Tensor& zero_points,
      const torch::Tensor& bias,
      const ConvGeometry& g,
      QuantParams output,
      PostOp post,
      const torch::Tensor& accum = {},
      QuantParams accum_q = {}) {
    const c10::List<c10::optional<c10::Scalar>> no_scalars;
    Named args{
        {"qx", x},
        {"x_scale", input.scale},
        {"x_zero_point", input.zero_point},
        {"qw", packed},
        {"w_scale", scales},
        {"w_zero_point", zero_points},
        {"bias", bias},
        {"stride", g.stride},
        {"padding", g.padding},
        {"dilation", g.dilation},
        {"groups", g.groups},
        {"output_scale", output.scale},
        {"output_zero_point", output.zero_point},
        {"output_dtype", c10::IValue()}};
    if (post != PostOp::AddRelu) {
      args.insert(
          args.end(),
          {{"attr", std::string(post == PostOp::Relu ? "relu" : "none")},
           {"scalars", no_scalars},
           {"algorithm", c10::IValue()}});
      return call(Op::Unary, std::move(args));
    }
    args.insert(
        args.end(),
        {{"qaccum", accum},
         {"accum_scale", accum_q.scale},
         {"accum_zero_point", accum_q.zero_point},
         {"binary_attr", std::string("sum")},
         {"alpha", c10::Scalar(1.0)},
         {"unary_attr", std::string("relu")},
         {"unary_scalars", no_scalars},
         {"unary_algorithm", c10::IValue()}});
    return call(Op::Binary, std::move(args));
  }

 private:
  enum class Op { Prepack, Unary, Binary };
  using Named = std::vector<std::pair<std::string, c10::IValue>>;

  static const c10::OperatorHandle* handle(Op which) {
    static const std::array<c10::optional<c10::OperatorHandle>, 3> handles{
        find_operator("onednn::qconv_prepack", ""),
        find_operator("onednn::qconv2d_pointwise", ""),
        find_operator("onednn::qconv2d_pointwise", "binary")};
    const auto& h = handles[static_cast<size_t>(which)];
    return h.has_value() ? &*h : nullptr;
  }

  // Calls the operator with `args` placed by the names of its schema's
  // arguments (defaults where not given); a scale or zero point the schema
  // takes as a tensor is passed as one.
  static torch::Tensor call(Op which, Named args) {
    const auto* op = handle(which);
    TORCH_CHECK(
        op != nullptr,
        "resnet: int8 inference needs oneDNN's quantized convolution "
        "(onednn::qconv2d_pointwise, LibTorch 2.x); this LibTorch lacks it");
    torch::jit::Stack stack;
    for (const auto& argument : op->schema().arguments()) {
      auto it = args.begin();
      while (it != args.end() && it->first != argument.name()) {
        ++it;
      }
      if (it == args.end()) {
        TORCH_CHECK(
            argument.default_value().has_value(),
            "resnet: ",
            op->schema().name(),
            " takes an argument '",
            argument.name(),
            "' that this library does not know");
        stack.push_back(*argument.default_value());
        continue;
      }
      auto& value = it->second;
      if (argument.type()->kind() == c10::TypeKind::TensorType &&
          (value.isDouble() || value.isInt())) {
        value = value.isDouble()
            ? torch::scalar_tensor(value.toDouble(), torch::kFloat)
            : torch::scalar_tensor(value.toInt(), torch::kLong);
      }
      stack.push_back(std::move(value));
    }
    call_boxed(*op, stack);
    return stack.at(0).toTensor();
  }
};

} // namespace resnet::detail
