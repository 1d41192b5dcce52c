#pragma once

// The network: a stem, up to four stages of residual blocks, global average
// pooling and a linear classifier. `ResNet<Block>` is the typed module;
// `AnyResNet` holds any of them behind one interface.

#include <resnet/model/blocks.h>
#include <resnet/model/functional.h>
#include <resnet/model/norm.h>
#include <resnet/model/options.h>

#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace resnet {

/// A network's parts, read-only; valid while the network lives.
struct NetworkParts {
  /// The stem's convolution and norm (`conv1`, `bn1`); `stem.conv` is
  /// nullptr with a deep stem (`StemType::Deep`, `DeepTiered`).
  ConvNorm stem;
  /// Whether the stem ends in the 3x3, stride-2 max pooling.
  bool max_pool = false;
  /// The blocks of layer1 ... layerN.
  std::vector<std::vector<BlockParts>> stages;
  /// The classifier, or nullptr without one.
  const torch::nn::LinearImpl* fc = nullptr;
  /// Input channels, and the smallest input height and width.
  int64_t in_channels = 3;
  /// How many times the network divides height and width: inputs must be
  /// at least this large in both.
  int64_t total_stride = 1;
};

/// What every ResNet offers, whatever its block type. Returned by
/// `resnet::create` for a choice of architecture at run time.
class ResNetBaseImpl : public torch::nn::Module {
 public:
  /// Logits `[N, num_classes]` (or pooled features `[N, num_features()]`
  /// when built with `num_classes == 0`).
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// The last stage's output, before pooling: `[N, num_features(), h, w]`.
  virtual torch::Tensor forward_features(const torch::Tensor& x) = 0;
  /// The output of every stage (layer1 ... layerN; C2 ... C5 of a feature
  /// pyramid for the four-stage networks).
  virtual std::vector<torch::Tensor> forward_stages(const torch::Tensor& x) = 0;
  /// Replaces `fc` with a freshly initialized one of `num_classes` outputs
  /// (0 removes it), on the device and dtype of the network.
  virtual void reset_classifier(int64_t num_classes) = 0;

  /// The options the network was built with (num_classes kept up to date).
  virtual const ResNetOptions& options() const = 0;
  /// Blocks per stage.
  virtual const std::vector<int64_t>& layers() const = 0;
  /// Channels going into `fc`.
  virtual int64_t num_features() const = 0;
  /// Channels put out by each stage.
  virtual std::vector<int64_t> stage_channels() const = 0;
  /// How many times the network divides height and width; inputs must be at
  /// least this large in both.
  virtual int64_t total_stride() const = 0;
  /// The network's parts, read-only, for code that builds something else
  /// from it (a fused inference copy).
  virtual NetworkParts parts() const = 0;
};

/// A ResNet whose stages are made of `Block`s (`BasicBlock<Norm>` or
/// `Bottleneck<Norm>`). Registered names are torchvision's: `conv1 bn1
/// layer1..layerN fc`, blocks `layerI.J.conv1 ... layerI.J.downsample.0/.1`.
template <class Block>
class ResNetImpl : public ResNetBaseImpl {
 public:
  /// The block module type, e.g. `BottleneckImpl<torch::nn::BatchNorm2d>`.
  using BlockImpl = typename Block::Impl;
  /// The normalization layer of the stem and of every block.
  using Norm = typename BlockImpl::Norm;

  /// Builds a network with `layers[i]` blocks in stage i (1 to 4 stages).
  /// `Shortcut::Auto` in `options` means `Shortcut::Projection`.
  explicit ResNetImpl(std::vector<int64_t> layers, ResNetOptions options = {})
      : layers_(std::move(layers)), options_(std::move(options)) {
    if (options_.shortcut() == Shortcut::Auto) {
      options_.shortcut(Shortcut::Projection);
    }
    check_options();
    build();
  }

  torch::Tensor forward(const torch::Tensor& x) override {
    return functional::classifier_head(forward_features(x), fc);
  }

  torch::Tensor forward_features(const torch::Tensor& x) override {
    auto out = forward_stem(x);
    for (auto& layer : stages) {
      out = layer->forward(out);
    }
    return out;
  }

  std::vector<torch::Tensor> forward_stages(const torch::Tensor& x) override {
    std::vector<torch::Tensor> outs;
    auto out = forward_stem(x);
    for (auto& layer : stages) {
      out = layer->forward(out);
      outs.push_back(out);
    }
    return outs;
  }

  void reset_classifier(int64_t num_classes) override {
    TORCH_CHECK(
        num_classes >= 0,
        "resnet: reset_classifier expects num_classes >= 0, got ",
        num_classes);
    const auto like = stem_weight();
    if (!fc.is_empty()) {
      unregister_module("fc");
      fc = nullptr;
    }
    options_.num_classes(num_classes);
    if (num_classes > 0) {
      fc =
          register_module("fc", torch::nn::Linear(num_features(), num_classes));
      fc->to(like.device(), like.scalar_type());
    }
  }

  const ResNetOptions& options() const override {
    return options_;
  }

  const std::vector<int64_t>& layers() const override {
    return layers_;
  }

  int64_t num_features() const override {
    return stage_channels().back();
  }

  std::vector<int64_t> stage_channels() const override {
    std::vector<int64_t> channels;
    for (size_t i = 0; i < layers_.size(); ++i) {
      channels.push_back(
          (options_.base_channels() << i) * BlockImpl::expansion);
    }
    return channels;
  }

  int64_t total_stride() const override {
    return total_stride_;
  }

  NetworkParts parts() const override {
    NetworkParts p;
    p.stem.conv = conv1.is_empty() ? nullptr : conv1.get();
    p.stem.norm = bn1.ptr().get();
    p.max_pool = !maxpool.is_empty();
    for (size_t i = 0; i < stages.size(); ++i) {
      std::vector<BlockParts> blocks;
      const auto children = stages[i]->children();
      for (size_t j = 0; j < children.size(); ++j) {
        const auto* block = children[j]->template as<BlockImpl>();
        TORCH_CHECK(
            block != nullptr,
            "resnet: layer",
            i + 1,
            ".",
            j,
            " is ",
            children[j]->name(),
            ", not one of the network's blocks");
        blocks.push_back(block->parts());
      }
      p.stages.push_back(std::move(blocks));
    }
    p.fc = fc.is_empty() ? nullptr : fc.get();
    p.in_channels = options_.in_channels();
    p.total_stride = total_stride_;
    return p;
  }

  /// A deep copy with the same parameters, buffers and mode, on `device` if
  /// given.
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device =
          c10::nullopt) const override {
    torch::NoGradGuard no_grad;
    auto copy = std::make_shared<ResNetImpl>(layers_, options_);
    const auto copy_into = [&](torch::Tensor& dst, const torch::Tensor& src) {
      auto data = src.detach().clone();
      dst.set_data(device ? data.to(*device) : data);
    };
    auto dst_params = copy->named_parameters();
    for (const auto& item : this->named_parameters()) {
      copy_into(dst_params[item.key()], item.value());
      dst_params[item.key()].set_requires_grad(item.value().requires_grad());
    }
    auto dst_buffers = copy->named_buffers();
    for (const auto& item : this->named_buffers()) {
      copy_into(dst_buffers[item.key()], item.value());
    }
    copy->train(this->is_training());
    return copy;
  }

  /// Prints `resnet::ResNet(layers=[...], num_classes=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "resnet::ResNet(layers=[";
    for (size_t i = 0; i < layers_.size(); ++i) {
      stream << (i ? ", " : "") << layers_[i];
    }
    stream << "], num_classes=" << options_.num_classes() << ")";
  }

  /// The stem's convolution with `StemType::Default`; empty otherwise.
  torch::nn::Conv2d conv1{nullptr};
  /// The deep stems' convolutions, norms and ReLUs (timm's layout: conv,
  /// norm, ReLU, conv, norm, ReLU, conv), registered as `conv1`; empty with
  /// `StemType::Default`.
  torch::nn::Sequential deep_stem{nullptr};
  /// The stem's (last) norm, followed by ReLU.
  Norm bn1{nullptr};
  /// The stem's 3x3, stride-2 max pooling; empty with `Stem::Cifar`.
  torch::nn::MaxPool2d maxpool{nullptr};
  /// layer1 ... layerN.
  std::vector<torch::nn::Sequential> stages;
  /// The classifier, `num_features()` -> `num_classes`; empty when
  /// `num_classes` is 0.
  torch::nn::Linear fc{nullptr};

 private:
  void check_options() const {
    TORCH_CHECK(
        !layers_.empty() && layers_.size() <= 4,
        "resnet: expected 1 to 4 stages, got ",
        layers_.size());
    for (auto n : layers_) {
      TORCH_CHECK(n >= 1, "resnet: every stage needs >= 1 block, got ", n);
    }
    TORCH_CHECK(
        options_.num_classes() >= 0,
        "resnet: num_classes must be >= 0, got ",
        options_.num_classes());
    TORCH_CHECK(
        options_.in_channels() >= 1,
        "resnet: in_channels must be >= 1, got ",
        options_.in_channels());
    TORCH_CHECK(
        options_.base_channels() >= 1,
        "resnet: base_channels must be >= 1, got ",
        options_.base_channels());
    TORCH_CHECK(
        options_.stem_type() == StemType::Default ||
            options_.stem_width() >=
                (options_.stem_type() == StemType::DeepTiered ? 4 : 1),
        "resnet: stem_width must be >= 1 (>= 4 for StemType::DeepTiered), "
        "got ",
        options_.stem_width(),
        " with StemType::",
        to_string(options_.stem_type()));
    detail::check_shared_options(
        "ResNet",
        "drop_path_rate",
        options_.drop_path_rate(),
        options_.avg_down(),
        options_.shortcut());
    const auto& dilate = options_.replace_stride_with_dilation();
    TORCH_CHECK(
        dilate.size() == 3,
        "resnet: replace_stride_with_dilation needs 3 entries (stages 2-4), "
        "got ",
        dilate.size());
    for (size_t i = layers_.size() - 1; i < dilate.size(); ++i) {
      TORCH_CHECK(
          !dilate[i],
          "resnet: replace_stride_with_dilation[",
          i,
          "] refers to stage ",
          i + 2,
          " but the network has ",
          layers_.size(),
          " stages");
    }
  }

  void build() {
    const auto& o = options_;
    const bool cifar = o.stem() == Stem::Cifar;
    const int64_t stem_out = o.stem_type() == StemType::Default
        ? o.base_channels()
        : 2 * o.stem_width();
    if (o.stem_type() == StemType::Default) {
      conv1 = register_module(
          "conv1",
          cifar ? detail::conv3x3(o.in_channels(), stem_out)
                : torch::nn::Conv2d(
                      torch::nn::Conv2dOptions(o.in_channels(), stem_out, 7)
                          .stride(2)
                          .padding(3)
                          .bias(false)));
    } else {
      const int64_t first = o.stem_type() == StemType::DeepTiered
          ? 3 * (o.stem_width() / 4)
          : o.stem_width();
      const int64_t second = o.stem_width();
      deep_stem = register_module(
          "conv1",
          torch::nn::Sequential(
              detail::conv3x3(o.in_channels(), first, cifar ? 1 : 2),
              NormTraits<Norm>::make(first),
              torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)),
              detail::conv3x3(first, second),
              NormTraits<Norm>::make(second),
              torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)),
              detail::conv3x3(second, stem_out)));
    }
    bn1 = register_module("bn1", NormTraits<Norm>::make(stem_out));
    total_stride_ = 1;
    if (!cifar) {
      maxpool = register_module(
          "maxpool",
          torch::nn::MaxPool2d(
              torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
      total_stride_ = 4;
    }

    int64_t in = stem_out;
    int64_t dilation = 1;
    int64_t total_blocks = 0;
    for (auto n : layers_) {
      total_blocks += n;
    }
    int64_t block_index = 0;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const int64_t planes = o.base_channels() << i;
      int64_t stride = i == 0 ? 1 : 2;
      const int64_t previous_dilation = dilation;
      if (i > 0 && o.replace_stride_with_dilation()[i - 1]) {
        dilation *= stride;
        stride = 1;
      }
      total_stride_ *= stride;
      torch::nn::Sequential layer;
      for (int64_t j = 0; j < layers_[i]; ++j) {
        // timm's linear rule: 0 for the first block, the full rate for the
        // last.
        const double drop = total_blocks > 1
            ? o.drop_path_rate() * static_cast<double>(block_index) /
                static_cast<double>(total_blocks - 1)
            : 0.0;
        layer->push_back(
            Block(BlockOptions(in, planes)
                      .stride(j == 0 ? stride : 1)
                      .groups(o.groups())
                      .base_width(o.width_per_group())
                      .dilation(j == 0 ? previous_dilation : dilation)
                      .stage_dilation(dilation)
                      .shortcut(o.shortcut())
                      .avg_down(o.avg_down())
                      .attention(o.attention())
                      .drop_path(drop)));
        in = planes * BlockImpl::expansion;
        ++block_index;
      }
      stages.push_back(register_module("layer" + std::to_string(i + 1), layer));
    }
    if (o.num_classes() > 0) {
      fc = register_module("fc", torch::nn::Linear(in, o.num_classes()));
    }
    init_weights();
  }

  // torchvision's initialization: He normal (fan_out, ReLU) convolutions,
  // norms at weight 1 and bias 0 (their default), optionally a zero last norm
  // per block; `fc` keeps Linear's default.
  void init_weights() {
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->template as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(
            conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      }
    }
    if (options_.zero_init_residual()) {
      for (auto& layer : stages) {
        for (auto& block : layer->children()) {
          block->as<BlockImpl>()->zero_init_last();
        }
      }
    }
  }

  torch::Tensor forward_stem(const torch::Tensor& x) {
    check_input(x);
    auto out = conv1.is_empty() ? deep_stem->forward(x) : conv1(x);
    out = bn1(out).relu_();
    return maxpool.is_empty() ? out : functional::stem_max_pool(out);
  }

  // A tensor of the network's device and dtype.
  torch::Tensor stem_weight() const {
    if (!conv1.is_empty()) {
      return conv1->weight;
    }
    return deep_stem->ptr(0)->as<torch::nn::Conv2dImpl>()->weight;
  }

  void check_input(const torch::Tensor& x) const {
    functional::check_network_input(
        x,
        options_.in_channels(),
        total_stride_,
        options_.stem() == Stem::ImageNet);
    const auto device = stem_weight().device();
    TORCH_CHECK(
        x.device() == device,
        "resnet: the input is on ",
        x.device(),
        ", the network on ",
        device,
        "; move one of them with .to()");
  }

  std::vector<int64_t> layers_;
  ResNetOptions options_;
  int64_t total_stride_ = 1;
};

/// Module holder of `ResNetImpl<Block>`, e.g. `ResNet<Bottleneck<>>`.
template <class Block>
class ResNet : public torch::nn::ModuleHolder<ResNetImpl<Block>> {
 public:
  using torch::nn::ModuleHolder<ResNetImpl<Block>>::ModuleHolder;
  /// The module type this holder owns.
  using Impl = ResNetImpl<Block>;
};

/// Holds any `ResNet<Block>` behind `ResNetBaseImpl`'s interface.
class AnyResNet : public torch::nn::ModuleHolder<ResNetBaseImpl> {
 public:
  /// The module type this holder owns: the interface, not a concrete
  /// network.
  using Impl = ResNetBaseImpl;

  /// The empty state.
  AnyResNet() : ModuleHolder(nullptr) {}
  /// The empty state, from `nullptr`.
  /* implicit */ AnyResNet(std::nullptr_t) : ModuleHolder(nullptr) {}
  /// Holds `impl`, sharing it.
  /* implicit */ AnyResNet(std::shared_ptr<ResNetBaseImpl> impl)
      : ModuleHolder(std::move(impl)) {}
  /// Holds the network `net` holds, sharing it (no copy).
  template <class Block>
  /* implicit */ AnyResNet(const ResNet<Block>& net)
      : ModuleHolder(std::shared_ptr<ResNetBaseImpl>(net.ptr())) {}
};

} // namespace resnet
