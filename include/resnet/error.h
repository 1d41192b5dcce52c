#pragma once

// What error messages say of a tensor (its type and shape) and of an
// exception caught to be reported again.

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <exception>
#include <sstream>
#include <string>

namespace resnet::detail {

/// "Byte [2, 1, 28, 28]", or "an undefined tensor".
inline std::string describe(const torch::Tensor& t) {
  if (!t.defined()) {
    return "an undefined tensor";
  }
  std::ostringstream out;
  out << t.scalar_type() << " " << t.sizes();
  return out.str();
}

} // namespace resnet::detail

namespace resnet {

/// An exception's message; for LibTorch's errors without the C++ backtrace.
inline std::string error_message(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return c10_error ? c10_error->what_without_backtrace() : e.what();
}

} // namespace resnet
