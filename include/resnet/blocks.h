#pragma once

// The two residual blocks: BasicBlock (two 3x3 convolutions) and Bottleneck
// (1x1, 3x3, 1x1), both templated on their normalization layer.

#include <resnet/attention.h>
#include <resnet/detail/layers.h>
#include <resnet/fused.h>
#include <resnet/norm.h>
#include <resnet/options.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>

namespace resnet {

/// The kind of a block, as the architecture table names it.
enum class BlockKind { Basic, Bottleneck };

namespace detail {

inline torch::nn::Conv2d conv3x3(
    int64_t in,
    int64_t out,
    int64_t stride = 1,
    int64_t groups = 1,
    int64_t dilation = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3)
                               .stride(stride)
                               .padding(dilation)
                               .groups(groups)
                               .dilation(dilation)
                               .bias(false));
}

inline torch::nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

inline void check_block_options(const BlockOptions& o, const char* block) {
  TORCH_CHECK(
      o.in_channels() > 0 && o.planes() > 0,
      "resnet: ",
      block,
      " expects in_channels > 0 and planes > 0, got ",
      o.in_channels(),
      " and ",
      o.planes());
  TORCH_CHECK(
      o.stride() >= 1 && o.dilation() >= 1 && o.groups() >= 1 &&
          o.base_width() >= 1,
      "resnet: ",
      block,
      " expects stride, dilation, groups and base_width >= 1, got ",
      o.stride(),
      ", ",
      o.dilation(),
      ", ",
      o.groups(),
      " and ",
      o.base_width());
  TORCH_CHECK(
      o.drop_path() >= 0.0 && o.drop_path() <= 1.0,
      "resnet: ",
      block,
      " expects drop_path in [0, 1], got ",
      o.drop_path());
  TORCH_CHECK(
      !(o.avg_down() && o.shortcut() == Shortcut::ZeroPad),
      "resnet: ",
      block,
      ": avg_down applies to projection shortcuts, got Shortcut::ZeroPad");
}

/// A 2x2 average pool with stride 1 and TensorFlow's 'same' padding (one
/// zero row and column after the input, counted in the averages): the pool
/// of an averaging shortcut in a dilated stage (timm's `AvgPool2dSame`).
class SamePadAvgPool2dImpl : public torch::nn::Cloneable<SamePadAvgPool2dImpl> {
 public:
  void reset() override {}

  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    return F::avg_pool2d(
        F::pad(x, F::PadFuncOptions({0, 1, 0, 1})),
        F::AvgPool2dFuncOptions(2).stride(1).ceil_mode(true).count_include_pad(
            false));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::SamePadAvgPool2d(kernel_size=2, stride=1)";
  }
};

TORCH_MODULE(SamePadAvgPool2d);

/// Registers the attention module of `o` as `se` on `owner`; empty for
/// `Attention::None`.
inline torch::nn::AnyModule register_attention(
    torch::nn::Module& owner,
    const BlockOptions& o,
    int64_t channels) {
  auto attention = make_attention(o.attention(), channels);
  if (!attention.is_empty()) {
    owner.register_module("se", attention.ptr());
  }
  return attention;
}

/// The end of a residual branch after its last norm, as timm orders it:
/// attention, then drop path.
inline torch::Tensor residual_tail(
    torch::Tensor out,
    torch::nn::AnyModule& attention,
    double drop_path_rate,
    bool training) {
  if (!attention.is_empty()) {
    out = attention.forward(out);
  }
  return drop_path(out, drop_path_rate, training);
}

/// The shortcut of a block whose output shape differs from its input's:
/// either a registered `downsample` projection, or parameter-free zero
/// padding. `identity()` applies whichever the block has.
template <class Norm>
class BlockShortcut {
 public:
  /// Registers `downsample` on `owner` when a projection is needed.
  void
  build(torch::nn::Module& owner, const BlockOptions& o, int64_t out_channels) {
    stride_ = o.stride();
    out_channels_ = out_channels;
    zero_pad_ = false;
    avg_down_ = o.avg_down();
    downsample = nullptr;
    if (o.stride() == 1 && o.in_channels() == out_channels) {
      return;
    }
    if (o.shortcut() == Shortcut::ZeroPad) {
      TORCH_CHECK(
          out_channels >= o.in_channels(),
          "resnet: a zero-padding shortcut cannot reduce channels (",
          o.in_channels(),
          " -> ",
          out_channels,
          "); use Shortcut::Projection");
      zero_pad_ = true;
      return;
    }
    if (!o.avg_down()) {
      downsample = owner.register_module(
          "downsample",
          torch::nn::Sequential(
              conv1x1(o.in_channels(), out_channels, o.stride()),
              NormTraits<Norm>::make(out_channels)));
      return;
    }
    torch::nn::Sequential seq;
    if (o.stride() > 1) {
      seq->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2)
                                              .stride(o.stride())
                                              .ceil_mode(true)
                                              .count_include_pad(false)));
    } else if (o.stage_dilation() > 1) {
      seq->push_back(SamePadAvgPool2d());
    } else {
      seq->push_back(torch::nn::Identity());
    }
    seq->push_back(conv1x1(o.in_channels(), out_channels));
    seq->push_back(NormTraits<Norm>::make(out_channels));
    downsample = owner.register_module("downsample", seq);
  }

  torch::Tensor identity(const torch::Tensor& x) {
    if (!downsample.is_empty()) {
      return downsample->forward(x);
    }
    if (!zero_pad_) {
      return x;
    }
    return zero_pad_shortcut(x, stride_, out_channels_);
  }

  /// The shortcut with its norm folded: a projection, or the stride of a
  /// zero-padding shortcut (0 for identity). `where` names the block in
  /// messages.
  std::pair<FusedConv2d, int64_t> fused(const std::string& where) const {
    if (zero_pad_) {
      return {FusedConv2d(nullptr), stride_};
    }
    if (downsample.is_empty()) {
      return {FusedConv2d(nullptr), 0};
    }
    TORCH_CHECK(
        !avg_down_,
        "resnet: cannot fuse ",
        where,
        ": averaging shortcuts (avg_down) are not folded");
    return {
        fold(*downsample->ptr(0), *downsample->ptr(1), where + ".downsample"),
        0};
  }

  /// The projection, or empty when the block has none.
  torch::nn::Sequential downsample{nullptr};

 private:
  int64_t stride_ = 1;
  int64_t out_channels_ = 0;
  bool zero_pad_ = false;
  bool avg_down_ = false;
};

/// Checks that a block with `attention` can be fused.
inline void check_fusable(
    const torch::nn::AnyModule& attention,
    const std::string& where) {
  TORCH_CHECK(
      attention.is_empty(),
      "resnet: cannot fuse ",
      where,
      ": attention modules depend on their input and are not folded");
}

} // namespace detail

/// Two 3x3 convolutions with a shortcut around them (He et al. 2015).
template <class NormT = torch::nn::BatchNorm2d>
class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl<NormT>> {
 public:
  using Norm = NormT;
  static constexpr int64_t expansion = 1;
  static constexpr BlockKind kind = BlockKind::Basic;

  explicit BasicBlockImpl(BlockOptions options) : options_(std::move(options)) {
    detail::check_block_options(options_, "BasicBlock");
    TORCH_CHECK(
        options_.groups() == 1 && options_.base_width() == 64,
        "resnet: BasicBlock only supports groups=1 and base_width=64, got "
        "groups=",
        options_.groups(),
        " and base_width=",
        options_.base_width());
    TORCH_CHECK(
        options_.dilation() == 1,
        "resnet: BasicBlock does not support dilation > 1, got ",
        options_.dilation());
    reset();
  }

  void reset() override {
    const auto& o = options_;
    conv1 = this->register_module(
        "conv1", detail::conv3x3(o.in_channels(), o.planes(), o.stride()));
    bn1 = this->register_module("bn1", NormTraits<Norm>::make(o.planes()));
    conv2 =
        this->register_module("conv2", detail::conv3x3(o.planes(), o.planes()));
    bn2 = this->register_module("bn2", NormTraits<Norm>::make(o.planes()));
    se = detail::register_attention(*this, o, o.planes() * expansion);
    shortcut_.build(*this, o, o.planes() * expansion);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    // In-place ReLU and addition on fresh intermediate tensors, as
    // torchvision does: fewer allocations, and autograd allows it.
    auto out = bn1(conv1(x)).relu_();
    out = detail::residual_tail(
        bn2(conv2(out)), se, options_.drop_path(), this->is_training());
    out += shortcut_.identity(x);
    return out.relu_();
  }

  /// Zeroes the scale of the last normalization layer (`bn2`).
  void zero_init_last() {
    detail::zero_norm_weight(*bn2);
  }

  /// An inference-only copy with every norm folded into the convolution
  /// before it; the same function in eval mode. `where` names the block in
  /// messages.
  FusedBlock fused(const std::string& where = "BasicBlock") const {
    detail::check_fusable(se, where);
    auto [shortcut, zero_pad_stride] = shortcut_.fused(where);
    return FusedBlock(
        std::vector<FusedConv2d>{
            detail::fold(*conv1, *bn1, where + ".conv1"),
            detail::fold(*conv2, *bn2, where + ".conv2")},
        shortcut,
        zero_pad_stride);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::BasicBlock(in=" << options_.in_channels()
           << ", planes=" << options_.planes()
           << ", stride=" << options_.stride() << ")";
  }

  const BlockOptions& options() const {
    return options_;
  }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  Norm bn1{nullptr}, bn2{nullptr};
  /// The attention module, registered as `se`; empty without one.
  torch::nn::AnyModule se;

 private:
  BlockOptions options_;
  detail::BlockShortcut<Norm> shortcut_;
};

/// 1x1 reduce, 3x3 (grouped, with the block's stride: torchvision's "V1.5"),
/// 1x1 expand by 4, with a shortcut around them.
template <class NormT = torch::nn::BatchNorm2d>
class BottleneckImpl : public torch::nn::Cloneable<BottleneckImpl<NormT>> {
 public:
  using Norm = NormT;
  static constexpr int64_t expansion = 4;
  static constexpr BlockKind kind = BlockKind::Bottleneck;

  explicit BottleneckImpl(BlockOptions options) : options_(std::move(options)) {
    detail::check_block_options(options_, "Bottleneck");
    TORCH_CHECK(
        width() > 0,
        "resnet: Bottleneck width planes*base_width/64 must be >= 1, got planes=",
        options_.planes(),
        " and base_width=",
        options_.base_width());
    reset();
  }

  /// Channels of the 3x3 convolution: planes * base_width / 64 * groups.
  int64_t width() const {
    return static_cast<int64_t>(
               options_.planes() * (options_.base_width() / 64.0)) *
        options_.groups();
  }

  void reset() override {
    const auto& o = options_;
    const int64_t w = width();
    conv1 = this->register_module("conv1", detail::conv1x1(o.in_channels(), w));
    bn1 = this->register_module("bn1", NormTraits<Norm>::make(w));
    conv2 = this->register_module(
        "conv2", detail::conv3x3(w, w, o.stride(), o.groups(), o.dilation()));
    bn2 = this->register_module("bn2", NormTraits<Norm>::make(w));
    conv3 = this->register_module(
        "conv3", detail::conv1x1(w, o.planes() * expansion));
    bn3 = this->register_module(
        "bn3", NormTraits<Norm>::make(o.planes() * expansion));
    se = detail::register_attention(*this, o, o.planes() * expansion);
    shortcut_.build(*this, o, o.planes() * expansion);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto out = bn1(conv1(x)).relu_();
    out = bn2(conv2(out)).relu_();
    out = detail::residual_tail(
        bn3(conv3(out)), se, options_.drop_path(), this->is_training());
    out += shortcut_.identity(x);
    return out.relu_();
  }

  /// Zeroes the scale of the last normalization layer (`bn3`).
  void zero_init_last() {
    detail::zero_norm_weight(*bn3);
  }

  /// An inference-only copy with every norm folded into the convolution
  /// before it; the same function in eval mode. `where` names the block in
  /// messages.
  FusedBlock fused(const std::string& where = "Bottleneck") const {
    detail::check_fusable(se, where);
    auto [shortcut, zero_pad_stride] = shortcut_.fused(where);
    return FusedBlock(
        std::vector<FusedConv2d>{
            detail::fold(*conv1, *bn1, where + ".conv1"),
            detail::fold(*conv2, *bn2, where + ".conv2"),
            detail::fold(*conv3, *bn3, where + ".conv3")},
        shortcut,
        zero_pad_stride);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::Bottleneck(in=" << options_.in_channels()
           << ", planes=" << options_.planes()
           << ", stride=" << options_.stride()
           << ", groups=" << options_.groups() << ", width=" << width() << ")";
  }

  const BlockOptions& options() const {
    return options_;
  }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  Norm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  /// The attention module, registered as `se`; empty without one.
  torch::nn::AnyModule se;

 private:
  BlockOptions options_;
  detail::BlockShortcut<Norm> shortcut_;
};

/// Module holder of `BasicBlockImpl<Norm>`.
template <class Norm = torch::nn::BatchNorm2d>
class BasicBlock : public torch::nn::ModuleHolder<BasicBlockImpl<Norm>> {
 public:
  using torch::nn::ModuleHolder<BasicBlockImpl<Norm>>::ModuleHolder;
  using Impl = BasicBlockImpl<Norm>;
};

/// Module holder of `BottleneckImpl<Norm>`.
template <class Norm = torch::nn::BatchNorm2d>
class Bottleneck : public torch::nn::ModuleHolder<BottleneckImpl<Norm>> {
 public:
  using torch::nn::ModuleHolder<BottleneckImpl<Norm>>::ModuleHolder;
  using Impl = BottleneckImpl<Norm>;
};

} // namespace resnet
