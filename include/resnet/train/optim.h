#pragma once

// Optimizers that update every parameter of a group with a few multi-tensor
// (`_foreach`) kernels instead of a chain of small kernels per parameter:
// drop-in replacements for torch::optim::SGD and torch::optim::AdamW with
// the same options, the same state and the same saved files, so that a
// checkpoint of one loads into the other. On a CUDA device the foreach
// kernels launch once per group of tensors (a ResNet-50 has 161 parameters);
// on the CPU they loop over the tensors as the per-parameter code does.

#include <c10/util/Exception.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace resnet {

/// Sets every gradient of `optimizer`'s parameters to none (undefined), as
/// Python's `zero_grad(set_to_none=True)` does: the next backward pass
/// writes fresh gradients instead of adding to zeros.
inline void clear_gradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      p.mutable_grad() = torch::Tensor();
    }
  }
}

/// The learning rate of each of `optimizer`'s parameter groups, in order.
inline std::vector<double> learning_rates(
    const torch::optim::Optimizer& optimizer) {
  std::vector<double> rates;
  for (const auto& group : optimizer.param_groups()) {
    rates.push_back(group.options().get_lr());
  }
  return rates;
}

/// Sets the learning rate of every parameter group of `optimizer`: `lr`
/// times the group's factor in `factors` (1 for a group beyond them).
inline void set_learning_rate(
    torch::optim::Optimizer& optimizer,
    double lr,
    const std::vector<double>& factors = {}) {
  size_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    group.options().set_lr(lr * (i < factors.size() ? factors[i] : 1.0));
    ++i;
  }
}

namespace detail {

// The key of a parameter in an optimizer's state map: the TensorImpl's
// address, as text in LibTorch 1.x and as a pointer in 2.x.
template <class StateMap>
auto optimizer_state_key(const StateMap&, const torch::Tensor& p) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << static_cast<const void*>(p.unsafeGetTensorImpl());
    return text.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

// Runs `closure` with gradients enabled, as torch::optim does.
inline torch::Tensor run_closure(
    const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) {
    return {};
  }
  at::AutoGradMode enable_grad(true);
  return closure();
}

// The parameters of a group that have gradients, and their gradients.
inline std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>>
params_with_grads(torch::optim::OptimizerParamGroup& group, const char* who) {
  std::vector<torch::Tensor> params, grads;
  for (auto& p : group.params()) {
    if (!p.grad().defined()) {
      continue;
    }
    TORCH_CHECK(
        !p.grad().is_sparse(),
        "resnet: ",
        who,
        " does not support sparse gradients");
    params.push_back(p);
    grads.push_back(p.grad());
  }
  return {std::move(params), std::move(grads)};
}

// Each of `tensors` times the one-element tensor `factor`.
inline std::vector<torch::Tensor> times(
    const std::vector<torch::Tensor>& tensors,
    const torch::Tensor& factor) {
#if TORCH_VERSION_MAJOR >= 2
  return at::_foreach_mul(tensors, factor);
#else // no foreach product with a tensor yet
  std::vector<torch::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) {
    out.push_back(t * factor);
  }
  return out;
#endif
}

} // namespace detail

/// torch::optim::SGD (momentum, dampening, Nesterov, weight decay) with
/// multi-tensor updates. Same options, state (`momentum_buffer`) and saved
/// files as torch::optim::SGD; the parameters after each step equal
/// torch::optim::SGD's up to rounding.
///
///     resnet::ForeachSGD sgd(model->parameters(),
///         torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
///
/// For a step captured as a CUDA graph (CudaGraphTrainStep), where a number
/// is frozen into the graph, `read_learning_rates_from_tensors()` makes it
/// read each group's rate from a one-element tensor on the parameters'
/// device instead. A step run eagerly in that mode first writes a rate that
/// changed in the options into its tensor; before replaying a captured step,
/// call `copy_learning_rates_to_tensors()` (CudaGraphTrainStep does, and
/// switches the mode on only while it captures).
class ForeachSGD : public torch::optim::SGD {
 public:
  using torch::optim::SGD::SGD;

  /// With `on`, each step from now on reads a group's learning rate from a
  /// tensor on its parameters' device rather than as a number; the tensors
  /// are made the first time. With `on` false, steps take the rates as
  /// numbers again; the tensors stay, with what a captured step reads, and
  /// `copy_learning_rates_to_tensors()` keeps them current.
  void read_learning_rates_from_tensors(bool on = true) {
    if (on && learning_rates_.empty()) {
      for (auto& group : param_groups_) {
        const auto& params = group.params();
        learning_rates_.push_back(
            params.empty() ? torch::zeros({})
                           : torch::zeros({}, params.front().options()));
        written_.push_back(std::nan(""));
      }
      copy_learning_rates_to_tensors();
    }
    from_tensors_ = on;
  }

  /// Whether steps read the learning rates from tensors.
  bool reads_learning_rates_from_tensors() const {
    return from_tensors_;
  }

  /// Writes each group's learning rate from its options into its tensor,
  /// where it changed (in the current CUDA stream's order); does nothing
  /// until `read_learning_rates_from_tensors()` has made the tensors.
  void copy_learning_rates_to_tensors() {
    TORCH_CHECK(
        learning_rates_.empty() ||
            learning_rates_.size() == param_groups_.size(),
        "resnet: ForeachSGD had ",
        learning_rates_.size(),
        " parameter groups when it began reading learning rates from "
        "tensors and has ",
        param_groups_.size(),
        " now");
    for (size_t g = 0; g < learning_rates_.size(); ++g) {
      const auto& o = static_cast<const torch::optim::SGDOptions&>(
          param_groups_[g].options());
      if (!(o.lr() == written_[g])) {
        learning_rates_[g].fill_(o.lr());
        written_[g] = o.lr();
      }
    }
  }

  /// The tensors the rates are read from, one per parameter group (none
  /// before the first `read_learning_rates_from_tensors()`).
  const std::vector<torch::Tensor>& learning_rate_tensors() const {
    return learning_rates_;
  }

  /// One SGD step of every parameter group, after running `closure` (if
  /// any) with gradients on; returns its loss, or an undefined tensor.
  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    auto loss = detail::run_closure(closure);
    if (from_tensors_) {
      copy_learning_rates_to_tensors();
    }
    for (size_t index = 0; index < param_groups_.size(); ++index) {
      auto& group = param_groups_[index];
      const auto& o =
          static_cast<const torch::optim::SGDOptions&>(group.options());
      auto [params, grads] = detail::params_with_grads(group, "ForeachSGD");
      if (params.empty()) {
        continue;
      }
      if (o.weight_decay() != 0) {
        grads = at::_foreach_add(grads, params, o.weight_decay());
      }
      if (o.momentum() != 0) {
        // Buffers start as a copy of the first gradient, as in SGD.
        std::vector<torch::Tensor> buffers, old_buffers, old_grads;
        for (size_t i = 0; i < params.size(); ++i) {
          const auto key = detail::optimizer_state_key(state_, params[i]);
          const auto found = state_.find(key);
          if (found == state_.end()) {
            auto state = std::make_unique<torch::optim::SGDParamState>();
            state->momentum_buffer(torch::clone(grads[i]).detach());
            buffers.push_back(state->momentum_buffer());
            state_[key] = std::move(state);
          } else {
            auto& state =
                static_cast<torch::optim::SGDParamState&>(*found->second);
            buffers.push_back(state.momentum_buffer());
            old_buffers.push_back(state.momentum_buffer());
            old_grads.push_back(grads[i]);
          }
        }
        if (!old_buffers.empty()) {
          at::_foreach_mul_(old_buffers, o.momentum());
          at::_foreach_add_(old_buffers, old_grads, 1 - o.dampening());
        }
        grads = o.nesterov() ? at::_foreach_add(grads, buffers, o.momentum())
                             : buffers;
      }
      if (!from_tensors_) {
        at::_foreach_add_(params, grads, -o.lr());
      } else {
        at::_foreach_sub_(
            params, detail::times(grads, learning_rates_.at(index)));
      }
    }
    return loss;
  }

 private:
  // One per parameter group once the rates have come from tensors, and the
  // rates last written into them.
  std::vector<torch::Tensor> learning_rates_;
  std::vector<double> written_;
  bool from_tensors_ = false;
};

/// torch::optim::AdamW (decoupled weight decay, optional AMSGrad) with
/// multi-tensor updates. Same options, state (`step`, `exp_avg`,
/// `exp_avg_sq`, `max_exp_avg_sq`) and saved files as torch::optim::AdamW;
/// the parameters after each step equal torch::optim::AdamW's up to
/// rounding.
class ForeachAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  /// One AdamW step of every parameter group, after running `closure` (if
  /// any) with gradients on; returns its loss, or an undefined tensor.
  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    auto loss = detail::run_closure(closure);
    for (auto& group : param_groups_) {
      const auto& o =
          static_cast<const torch::optim::AdamWOptions&>(group.options());
      const auto [beta1, beta2] = o.betas();
      auto [params, grads] = detail::params_with_grads(group, "ForeachAdamW");
      if (params.empty()) {
        continue;
      }
      std::vector<torch::Tensor> avg, avg_sq, max_avg_sq;
      std::vector<c10::Scalar> step_size, root_correction2;
      for (const auto& p : params) {
        const auto key = detail::optimizer_state_key(state_, p);
        if (state_.find(key) == state_.end()) {
          auto state = std::make_unique<torch::optim::AdamWParamState>();
          state->step(0);
          state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          state->exp_avg_sq(
              torch::zeros_like(p, torch::MemoryFormat::Preserve));
          if (o.amsgrad()) {
            state->max_exp_avg_sq(
                torch::zeros_like(p, torch::MemoryFormat::Preserve));
          }
          state_[key] = std::move(state);
        }
        auto& state = static_cast<torch::optim::AdamWParamState&>(*state_[key]);
        state.step(state.step() + 1);
        const auto n = static_cast<double>(state.step());
        avg.push_back(state.exp_avg());
        avg_sq.push_back(state.exp_avg_sq());
        if (o.amsgrad()) {
          max_avg_sq.push_back(state.max_exp_avg_sq());
        }
        step_size.emplace_back(-o.lr() / (1 - std::pow(beta1, n)));
        root_correction2.emplace_back(std::sqrt(1 - std::pow(beta2, n)));
      }
      if (o.weight_decay() != 0) {
        at::_foreach_mul_(params, 1 - o.lr() * o.weight_decay());
      }
      at::_foreach_mul_(avg, beta1);
      at::_foreach_add_(avg, grads, 1 - beta1);
      at::_foreach_mul_(avg_sq, beta2);
      at::_foreach_addcmul_(avg_sq, grads, grads, 1 - beta2);
      const auto& second = o.amsgrad() ? max_avg_sq : avg_sq;
      if (o.amsgrad()) {
        at::_foreach_maximum_(max_avg_sq, avg_sq);
      }
      auto denominator = at::_foreach_sqrt(second);
      at::_foreach_div_(denominator, root_correction2);
      at::_foreach_add_(denominator, o.eps());
      at::_foreach_addcdiv_(params, avg, denominator, step_size);
    }
    return loss;
  }
};

} // namespace resnet
