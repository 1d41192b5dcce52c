#pragma once

// Named tensors in PyTorch's state_dict order, and a module's own.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace resnet {

/// Named tensors in PyTorch's state_dict order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

namespace detail {

inline void append_state(
    const torch::nn::Module& m,
    const std::string& prefix,
    StateDict& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    out.emplace_back(prefix + p.key(), p.value());
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) {
    out.emplace_back(prefix + b.key(), b.value());
  }
  for (const auto& c : m.named_children()) {
    append_state(*c.value(), prefix + c.key() + ".", out);
  }
}

} // namespace detail

/// Every parameter and buffer of `module`, in the order PyTorch's
/// `state_dict()` lists them: a module's own parameters, its own buffers,
/// then each child in registration order. The tensors are the module's own.
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  detail::append_state(module, "", out);
  return out;
}

} // namespace resnet
