#pragma once

// Helpers shared by the test files.

#include <resnet/resnet.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace resnet_test {

inline int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) {
    n += p.numel();
  }
  return n;
}

/// One state_dict entry as PyTorch lists it: "name kind shape".
inline std::string
describe(const std::string& name, const char* kind, const torch::Tensor& t) {
  std::string shape;
  for (auto s : t.sizes()) {
    shape += (shape.empty() ? "" : "x") + std::to_string(s);
  }
  return name + " " + kind + " " + (shape.empty() ? "scalar" : shape);
}

/// Every parameter and buffer in PyTorch's state_dict order: a module's own
/// parameters, then its own buffers, then each child in registration order.
inline void collect_state(
    const torch::nn::Module& m,
    const std::string& prefix,
    std::vector<std::string>& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    out.push_back(describe(prefix + p.key(), "param", p.value()));
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) {
    out.push_back(describe(prefix + b.key(), "buffer", b.value()));
  }
  for (const auto& c : m.named_children()) {
    collect_state(*c.value(), prefix + c.key() + ".", out);
  }
}

inline std::vector<std::string> state_entries(const torch::nn::Module& m) {
  std::vector<std::string> out;
  collect_state(m, "", out);
  return out;
}

/// The message of the c10::Error that `f` throws, or "" if it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

/// Relative error ||a - b|| / ||b||.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm().clamp_min(1e-30)).item<double>();
}

} // namespace resnet_test
