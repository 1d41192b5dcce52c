#pragma once

// The CPU kernels of fused inference in LibTorch 2.x: a oneDNN convolution
// that also applies its bias, a ReLU, or the residual addition and ReLU
// (oneDNN post-ops), on dense channels-last tensors with weights reordered
// once for the input size. ATen registers these as the operators
// `mkldnn::_convolution_pointwise` (and its `binary` and in-place forms) and
// `mkldnn::_reorder_convolution_weight`; they are looked up at run time, so
// a LibTorch without them (1.13) compiles the same code and reports them
// unavailable.

#include <ATen/core/List.h>
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

/// What a fused convolution applies after adding its bias.
enum class PostOp {
  /// Nothing.
  None,
  /// max(0, y).
  Relu,
  /// max(0, y + other): the end of a residual block.
  AddRelu,
};

/// The stride, padding, dilation and groups of a convolution.
struct ConvGeometry {
  std::vector<int64_t> stride;
  std::vector<int64_t> padding;
  std::vector<int64_t> dilation;
  int64_t groups = 1;
};

/// The sizes [N, out, H', W'] of a convolution's output for an input of
/// `input` [N, C, H, W] and a weight of `weight` [out, C / groups, kh, kw]
/// with geometry `g`; an error where the channels do not match or the
/// output would be empty.
inline std::vector<int64_t> conv_output_sizes(
    c10::IntArrayRef input,
    c10::IntArrayRef weight,
    const ConvGeometry& g) {
  TORCH_CHECK(
      input.size() == 4 && weight.size() == 4 && g.stride.size() == 2 &&
          g.padding.size() == 2 && g.dilation.size() == 2 && g.groups >= 1 &&
          input[1] == weight[1] * g.groups,
      "resnet: a convolution of weight ",
      weight,
      " and groups ",
      g.groups,
      " cannot take an input of ",
      input);
  std::vector<int64_t> out{input[0], weight[0]};
  for (size_t d = 0; d < 2; ++d) {
    const int64_t extent = g.dilation[d] * (weight[2 + d] - 1) + 1;
    const int64_t size = input[2 + d] + 2 * g.padding[d] - extent;
    TORCH_CHECK(
        g.stride[d] >= 1 && size >= 0,
        "resnet: a convolution of weight ",
        weight,
        ", padding ",
        c10::IntArrayRef(g.padding),
        " and dilation ",
        c10::IntArrayRef(g.dilation),
        " leaves nothing of an input of ",
        input);
    out.push_back(size / g.stride[d] + 1);
  }
  return out;
}

/// The operator `name`.`overload` as this LibTorch registers it; nullopt
/// where it does not.
inline c10::optional<c10::OperatorHandle> find_operator(
    const char* name,
    const char* overload) {
  auto found = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!found.has_value()) {
    return c10::nullopt;
  }
  return *found;
}

/// `op` called on `stack`, with oneDNN's own errors (dnnl::error, which
/// LibTorch lets through) turned into `c10::Error`s naming the operator.
inline void call_boxed(
    const c10::OperatorHandle& op,
    torch::jit::Stack& stack) {
  try {
    op.callBoxed(&stack);
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "resnet: ", op.schema().name(), " failed: ", e.what());
  }
}

class OneDnnFused {
 public:
  /// Whether this LibTorch registers the fused operators.
  static bool available() {
    return handle(Op::Reorder) && handle(Op::Unary) && handle(Op::Binary) &&
        handle(Op::BinaryInPlace);
  }

  /// `weight` [out, in / groups, kh, kw] (float32) reordered into the
  /// layout oneDNN picks for inputs of `input_sizes`.
  static torch::Tensor prepack(
      const torch::Tensor& weight,
      const ConvGeometry& g,
      c10::IntArrayRef input_sizes) {
    torch::jit::Stack stack{
        weight.contiguous(),
        g.padding,
        g.stride,
        g.dilation,
        g.groups,
        input_sizes};
    call(Op::Reorder, stack);
    return stack.at(0).toTensor();
  }

  /// The convolution of `x` (dense, float32, channels last) with the
  /// prepacked weight and `bias`, then `post`. For `PostOp::AddRelu`,
  /// `other` is a channels-last tensor of the output's shape; with
  /// `overwrite_other` the result is written into it.
  static torch::Tensor run(
      const torch::Tensor& x,
      const torch::Tensor& packed_weight,
      const torch::Tensor& bias,
      const ConvGeometry& g,
      PostOp post,
      torch::Tensor other = {},
      bool overwrite_other = false) {
    const c10::List<c10::optional<c10::Scalar>> no_scalars;
    if (post == PostOp::AddRelu) {
      torch::jit::Stack stack{
          x,
          std::move(other),
          packed_weight,
          bias,
          g.padding,
          g.stride,
          g.dilation,
          g.groups,
          std::string("add"),
          c10::IValue(),
          std::string("relu"),
          no_scalars,
          c10::IValue()};
      // The in-place form takes the tensor it writes first.
      if (overwrite_other) {
        std::swap(stack[0], stack[1]);
      }
      call(overwrite_other ? Op::BinaryInPlace : Op::Binary, stack);
      return stack.at(0).toTensor();
    }
    torch::jit::Stack stack{
        x,
        packed_weight,
        bias,
        g.padding,
        g.stride,
        g.dilation,
        g.groups,
        std::string(post == PostOp::Relu ? "relu" : "none"),
        no_scalars,
        c10::IValue()};
    call(Op::Unary, stack);
    return stack.at(0).toTensor();
  }

 private:
  enum class Op { Reorder, Unary, Binary, BinaryInPlace };

  // The registered operator, or null; looked up once per process.
  static const c10::OperatorHandle* handle(Op which) {
    static const std::array<c10::optional<c10::OperatorHandle>, 4> handles{
        find_operator("mkldnn::_reorder_convolution_weight", ""),
        find_operator("mkldnn::_convolution_pointwise", ""),
        find_operator("mkldnn::_convolution_pointwise", "binary"),
        find_operator("mkldnn::_convolution_pointwise_", "binary")};
    const auto& h = handles[static_cast<size_t>(which)];
    return h.has_value() ? &*h : nullptr;
  }

  static void call(Op which, torch::jit::Stack& stack) {
    const auto* op = handle(which);
    TORCH_CHECK(
        op != nullptr,
        "resnet: this LibTorch lacks oneDNN's fused convolution operators "
        "(mkldnn::_convolution_pointwise); use FuseOptions().onednn_fused(false)");
    call_boxed(*op, stack);
  }
};

} // namespace resnet::detail
