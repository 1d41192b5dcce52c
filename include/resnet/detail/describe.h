#pragma once

// A tensor's type and shape for error messages.

#include <torch/types.h>

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
