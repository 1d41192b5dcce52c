#pragma once

// Batch normalization whose statistics are computed over the whole batch of
// every process (SyncBatchNorm2d), and the call that wires a model's to a
// group.

#include <resnet/train/distributed/group.h>

#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace resnet::distributed {

namespace detail {

/// y = (x - mean) * invstd * weight + bias with the statistics of the whole
/// batch across the processes; backward reduces the two per-channel sums
/// the input's gradient needs over the processes too (PyTorch's
/// SyncBatchNorm's rule), so that averaging the gradients afterwards gives
/// those of one process with the whole batch.
struct SyncBatchNormFunction
    : torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      const torch::Tensor& input,
      const torch::Tensor& weight,
      const torch::Tensor& bias,
      const torch::Tensor& mean,
      const torch::Tensor& invstd,
      double count,
      Group* group) {
    const auto shape = std::vector<int64_t>{1, mean.size(0), 1, 1};
    const auto x = input.to(torch::kFloat);
    const auto xhat = (x - mean.view(shape)) * invstd.view(shape);
    ctx->save_for_backward({input, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["group"] =
        static_cast<int64_t>(reinterpret_cast<std::intptr_t>(group));
    return (xhat * weight.view(shape) + bias.view(shape)).to(input.dtype());
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_output) {
    const auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    const auto& weight = saved[1];
    const auto& mean = saved[2];
    const auto& invstd = saved[3];
    const double count = ctx->saved_data["count"].toDouble();
    auto* group = reinterpret_cast<Group*>(
        static_cast<std::intptr_t>(ctx->saved_data["group"].toInt()));
    const auto shape = std::vector<int64_t>{1, mean.size(0), 1, 1};
    const auto g = grad_output[0].to(torch::kFloat);
    const auto xhat =
        (input.to(torch::kFloat) - mean.view(shape)) * invstd.view(shape);
    const auto sum_g = g.sum({0, 2, 3});
    const auto sum_g_xhat = (g * xhat).sum({0, 2, 3});
    // This process's shares of the affine gradients, averaged later with
    // the others'.
    const auto grad_weight = sum_g_xhat.clone();
    const auto grad_bias = sum_g.clone();
    auto sums = torch::cat({sum_g, sum_g_xhat});
    group->all_reduce_sum_({sums});
    const auto c = mean.size(0);
    const auto mean_g = (sums.slice(0, 0, c) / count).view(shape);
    const auto mean_g_xhat = (sums.slice(0, c) / count).view(shape);
    const auto grad_input =
        (weight * invstd).view(shape) * (g - mean_g - xhat * mean_g_xhat);
    return {
        grad_input.to(input.dtype()),
        grad_weight,
        grad_bias,
        torch::Tensor(),
        torch::Tensor(),
        torch::Tensor(),
        torch::Tensor()};
  }
};

} // namespace detail

/// Batch normalization whose training-mode statistics are those of the whole
/// batch across the processes of a Group (PyTorch's SyncBatchNorm): with
/// GroupNorm's exactness, the same as one process with the whole batch. A
/// `torch::nn::BatchNorm2d` in every other respect (options, parameter and
/// buffer names, eval mode, weights; fuse_for_inference does not take it:
/// load its weights into a network with BatchNorm2d for that): build a network
/// with it as the normalization, e.g.
/// `resnet::create<SyncBatchNorm2d>("resnet50")`, then
/// synchronize_batch_norm(model, group). Without a group, with one process
/// or in eval mode it is plain batch norm. Computes in float32 (the output
/// in the input's dtype); 4-D input [N, C, H, W], every process with a
/// batch of at least one sample.
class SyncBatchNorm2dImpl : public torch::nn::Cloneable<SyncBatchNorm2dImpl> {
 public:
  /// A batch norm with `options_` (as torch::nn::BatchNorm2d takes; an int
  /// converts to the number of channels), not synchronized until
  /// `set_group`.
  explicit SyncBatchNorm2dImpl(const torch::nn::BatchNormOptions& options_)
      : options(options_) {
    SyncBatchNorm2dImpl::reset();
  }

  /// Makes the parameters (weight 1, bias 0) and the running statistics,
  /// as torch::nn::BatchNorm2d does.
  void reset() override {
    const int64_t c = options.num_features();
    TORCH_CHECK(c > 0, "resnet: SyncBatchNorm2d needs channels > 0");
    if (options.affine()) {
      weight = register_parameter("weight", torch::ones({c}));
      bias = register_parameter("bias", torch::zeros({c}));
    } else {
      weight = register_parameter("weight", torch::Tensor(), false);
      bias = register_parameter("bias", torch::Tensor(), false);
    }
    if (options.track_running_stats()) {
      running_mean = register_buffer("running_mean", torch::zeros({c}));
      running_var = register_buffer("running_var", torch::ones({c}));
      num_batches_tracked = register_buffer(
          "num_batches_tracked", torch::tensor(0, torch::kLong));
    } else {
      running_mean = register_buffer("running_mean", torch::Tensor());
      running_var = register_buffer("running_var", torch::Tensor());
      num_batches_tracked =
          register_buffer("num_batches_tracked", torch::Tensor());
    }
  }

  /// Prints the channels and options, as torch::nn::BatchNorm2d does.
  void pretty_print(std::ostream& stream) const override {
    stream << std::boolalpha << "resnet::distributed::SyncBatchNorm2d("
           << options.num_features() << ", eps=" << options.eps()
           << ", momentum=";
    if (options.momentum().has_value()) {
      stream << *options.momentum();
    } else {
      stream << "None";
    }
    stream << ", affine=" << options.affine()
           << ", track_running_stats=" << options.track_running_stats() << ")";
  }

  /// The group to synchronize over (it must outlive the module's use);
  /// nullptr: none.
  void set_group(Group* group) {
    group_ = group;
  }
  /// The group it synchronizes over; nullptr: none.
  Group* group() const {
    return group_;
  }

  /// Normalizes `input` [N, C, H, W]: in training mode with the statistics
  /// of every process's batch (a collective: every process must call it),
  /// otherwise as torch::nn::BatchNorm2d.
  torch::Tensor forward(const torch::Tensor& input) {
    if (group_ == nullptr || group_->size() == 1 || !is_training()) {
      return local_forward(input);
    }
    TORCH_CHECK(
        input.dim() == 4 && input.size(1) == options.num_features(),
        "resnet: SyncBatchNorm2d expects input [N, ",
        options.num_features(),
        ", H, W], got ",
        input.sizes());
    const int64_t c = input.size(1);
    const double n = static_cast<double>(input.numel() / c);
    torch::Tensor mean, invstd;
    double count = 0;
    {
      torch::NoGradGuard no_grad;
      // Per process: count, mean and variance (two-pass, float32); summed
      // in float64 as the count, the sum and the sum of squares.
      const auto x = input.to(torch::kFloat);
      const auto [var_r, mean_r] = torch::var_mean(x, {0, 2, 3}, false);
      const auto m = mean_r.to(torch::kDouble);
      auto sums = torch::cat(
          {torch::full({1}, n, torch::kDouble),
           m * n,
           (var_r.to(torch::kDouble) + m * m) * n});
      group_->all_reduce_sum_({sums});
      count = sums[0].item<double>();
      const auto mean64 = sums.slice(0, 1, 1 + c) / count;
      const auto var64 =
          (sums.slice(0, 1 + c) / count - mean64 * mean64).clamp_min(0);
      mean = mean64.to(torch::kFloat);
      invstd = (var64 + options.eps()).rsqrt().to(torch::kFloat);
      if (options.track_running_stats()) {
        num_batches_tracked += 1;
        const double momentum = options.momentum().has_value()
            ? *options.momentum()
            : 1.0 / num_batches_tracked.item<double>();
        const auto unbiased = var64 * (count / std::max(count - 1, 1.0));
        running_mean.mul_(1 - momentum)
            .add_(mean64.to(running_mean.dtype()), momentum);
        running_var.mul_(1 - momentum)
            .add_(unbiased.to(running_var.dtype()), momentum);
      }
    }
    const auto opts =
        torch::TensorOptions().dtype(torch::kFloat).device(input.device());
    const auto w =
        options.affine() ? weight.to(torch::kFloat) : torch::ones({c}, opts);
    const auto b =
        options.affine() ? bias.to(torch::kFloat) : torch::zeros({c}, opts);
    return detail::SyncBatchNormFunction::apply(
        input, w, b, mean, invstd, count, group_);
  }

  /// The options it was built with.
  torch::nn::BatchNormOptions options;
  /// [C] the scale (gamma), a parameter; undefined without `affine`.
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  /// \var bias
  /// [C] the shift (beta), a parameter; undefined without `affine`.

  /// \var running_mean
  /// [C] the running mean over every process's batches, a buffer;
  /// undefined without `track_running_stats`.

  /// \var running_var
  /// [C] the running unbiased variance, a buffer; undefined without
  /// `track_running_stats`.

  /// \var num_batches_tracked
  /// The number of training batches seen (0-dim int64), a buffer; undefined
  /// without `track_running_stats`.

 private:
  // torch::nn::BatchNorm2d's forward pass: this process's batch only.
  torch::Tensor local_forward(const torch::Tensor& input) {
    double factor = 0;
    if (is_training() && options.track_running_stats()) {
      num_batches_tracked += 1;
      factor = options.momentum().has_value()
          ? *options.momentum()
          : 1.0 / num_batches_tracked.item<double>();
    }
    return torch::batch_norm(
        input,
        weight,
        bias,
        running_mean,
        running_var,
        is_training() || !options.track_running_stats(),
        factor,
        options.eps(),
        true);
  }

  Group* group_ = nullptr;
};
TORCH_MODULE(SyncBatchNorm2d);

/// Makes every SyncBatchNorm2d in `module` synchronize over `group` (which
/// must outlive their use); returns how many there are.
inline int64_t synchronize_batch_norm(torch::nn::Module& module, Group& group) {
  std::vector<torch::nn::Module*> all{&module};
  for (const auto& m : module.modules(/*include_self=*/false)) {
    all.push_back(m.get());
  }
  int64_t found = 0;
  for (auto* m : all) {
    if (auto* bn = dynamic_cast<SyncBatchNorm2dImpl*>(m)) {
      bn->set_group(&group);
      ++found;
    }
  }
  return found;
}

} // namespace resnet::distributed
