#pragma once

// The two residual blocks: BasicBlock (two 3x3 convolutions) and Bottleneck
// (1x1, 3x3, 1x1), both templated on their normalization layer.

#include <resnet/model/attention.h>
#include <resnet/model/functional.h>
#include <resnet/model/norm.h>
#include <resnet/model/options.h>

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
#include <vector>

namespace resnet {

/// The kind of a block, as the architecture table names it.
enum class BlockKind { Basic, Bottleneck };

/// "BasicBlock" or "Bottleneck".
inline const char* to_string(BlockKind kind) {
  return kind == BlockKind::Basic ? "BasicBlock" : "Bottleneck";
}

/// What a block's shortcut is.
enum class ShortcutKind {
  /// The input itself.
  Identity,
  /// Every `stride`-th pixel, channels zero-padded (no parameters).
  ZeroPad,
  /// A strided 1x1 convolution and a norm (`downsample.0/.1`).
  Projection,
  /// Average pooling, then a 1x1 convolution and a norm (`avg_down`).
  AveragedProjection,
};

/// A convolution and the normalization layer that follows it.
struct ConvNorm {
  /// The convolution (no bias in the torchvision layout).
  const torch::nn::Conv2dImpl* conv = nullptr;
  /// The normalization layer after it: a `BatchNorm2d`, `GroupNorm`,
  /// `FrozenBatchNorm2d` or another norm module.
  const torch::nn::Module* norm = nullptr;
};

/// A block's shortcut, read-only.
struct ShortcutParts {
  /// What the shortcut is; `projection` is set only for the projections.
  ShortcutKind kind = ShortcutKind::Identity;
  /// The stride of a zero-padding shortcut or of the pooling.
  int64_t stride = 1;
  /// The projection, for `Projection` and `AveragedProjection`.
  ConvNorm projection;
};

/// A residual block's parts, read-only, for code that builds something else
/// from a block (a fused inference copy): its convolutions in order, each
/// with the norm after it, the attention module on the residual branch
/// (nullptr without one) and the shortcut. Valid while the block lives.
struct BlockParts {
  /// Which block it is.
  BlockKind kind = BlockKind::Basic;
  /// The residual branch's convolutions and norms in order: two for a
  /// `BasicBlock`, three for a `Bottleneck`.
  std::vector<ConvNorm> layers;
  /// The attention module after the last norm, or nullptr without one.
  const torch::nn::Module* attention = nullptr;
  /// The shortcut around the residual branch.
  ShortcutParts shortcut;
};

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
  check_shared_options(
      block, "drop_path", o.drop_path(), o.avg_down(), o.shortcut());
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
    return functional::zero_pad_shortcut(x, stride_, out_channels_);
  }

  /// The shortcut's kind and parts.
  ShortcutParts parts() const {
    ShortcutParts p;
    p.stride = stride_;
    if (zero_pad_) {
      p.kind = ShortcutKind::ZeroPad;
    } else if (!downsample.is_empty()) {
      const auto n = downsample->size();
      p.kind = avg_down_ ? ShortcutKind::AveragedProjection
                         : ShortcutKind::Projection;
      p.projection = {
          downsample->ptr(n - 2)->as<torch::nn::Conv2dImpl>(),
          downsample->ptr(n - 1).get()};
    }
    return p;
  }

  /// The projection, or empty when the block has none.
  torch::nn::Sequential downsample{nullptr};

 private:
  int64_t stride_ = 1;
  int64_t out_channels_ = 0;
  bool zero_pad_ = false;
  bool avg_down_ = false;
};

} // namespace detail

/// Two 3x3 convolutions with a shortcut around them (He et al. 2015).
template <class NormT = torch::nn::BatchNorm2d>
class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl<NormT>> {
 public:
  /// The normalization layer after each convolution.
  using Norm = NormT;
  /// Output channels per `planes`: the block puts out `planes` channels.
  static constexpr int64_t expansion = 1;
  /// `BlockKind::Basic`.
  static constexpr BlockKind kind = BlockKind::Basic;

  /// Builds the block; refuses groups other than 1, a base width other than
  /// 64 and dilation > 1, which only a `Bottleneck` supports.
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

  /// Creates and registers the convolutions, norms, attention module and
  /// shortcut from the options, freshly initialized.
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

  /// Applies the block to `x` [N, in_channels, H, W]; the output has
  /// `planes` channels and H and W divided by the stride (rounded up).
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

  /// The block's parts in order: conv1/bn1, conv2/bn2, attention, shortcut.
  BlockParts parts() const {
    return {
        kind,
        {{conv1.get(), bn1.ptr().get()}, {conv2.get(), bn2.ptr().get()}},
        se.is_empty() ? nullptr : se.ptr().get(),
        shortcut_.parts()};
  }

  /// Prints `resnet::BasicBlock(in=..., planes=..., stride=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::BasicBlock(in=" << options_.in_channels()
           << ", planes=" << options_.planes()
           << ", stride=" << options_.stride() << ")";
  }

  /// The options the block was built with.
  const BlockOptions& options() const {
    return options_;
  }

  /// The first 3x3 convolution, in_channels -> planes, with the stride.
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  /// \var conv2
  /// The second 3x3 convolution, planes -> planes.

  /// The norm after `conv1`.
  Norm bn1{nullptr}, bn2{nullptr};
  /// \var bn2
  /// The norm after `conv2`; `zero_init_last` zeroes its scale.

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
  /// The normalization layer after each convolution.
  using Norm = NormT;
  /// Output channels per `planes`: the block puts out `4 * planes` channels.
  static constexpr int64_t expansion = 4;
  /// `BlockKind::Bottleneck`.
  static constexpr BlockKind kind = BlockKind::Bottleneck;

  /// Builds the block; refuses options that leave the 3x3 convolution
  /// (`width()`) without channels.
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

  /// Creates and registers the convolutions, norms, attention module and
  /// shortcut from the options, freshly initialized.
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

  /// Applies the block to `x` [N, in_channels, H, W]; the output has
  /// `4 * planes` channels and H and W divided by the stride (rounded up).
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

  /// The block's parts in order: conv1/bn1 ... conv3/bn3, attention,
  /// shortcut.
  BlockParts parts() const {
    return {
        kind,
        {{conv1.get(), bn1.ptr().get()},
         {conv2.get(), bn2.ptr().get()},
         {conv3.get(), bn3.ptr().get()}},
        se.is_empty() ? nullptr : se.ptr().get(),
        shortcut_.parts()};
  }

  /// Prints `resnet::Bottleneck(in=..., planes=..., stride=..., groups=...,
  /// width=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::Bottleneck(in=" << options_.in_channels()
           << ", planes=" << options_.planes()
           << ", stride=" << options_.stride()
           << ", groups=" << options_.groups() << ", width=" << width() << ")";
  }

  /// The options the block was built with.
  const BlockOptions& options() const {
    return options_;
  }

  /// The 1x1 reduction, in_channels -> `width()`.
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  /// \var conv2
  /// The 3x3 convolution, `width()` -> `width()`, grouped, with the stride
  /// and dilation.

  /// \var conv3
  /// The 1x1 expansion, `width()` -> `4 * planes`.

  /// The norm after `conv1`.
  Norm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  /// \var bn2
  /// The norm after `conv2`.

  /// \var bn3
  /// The norm after `conv3`; `zero_init_last` zeroes its scale.

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
  /// The module type this holder owns.
  using Impl = BasicBlockImpl<Norm>;
};

/// Module holder of `BottleneckImpl<Norm>`.
template <class Norm = torch::nn::BatchNorm2d>
class Bottleneck : public torch::nn::ModuleHolder<BottleneckImpl<Norm>> {
 public:
  using torch::nn::ModuleHolder<BottleneckImpl<Norm>>::ModuleHolder;
  /// The module type this holder owns.
  using Impl = BottleneckImpl<Norm>;
};

} // namespace resnet
