#pragma once

// IDX files, the format of MNIST, Fashion-MNIST, KMNIST and EMNIST: a magic
// number naming the element type and rank, big-endian dimensions, then the
// elements (big-endian). Gzipped or not. Needs zlib (Debian: zlib1g-dev).
// Not part of <resnet/resnet.h>.

#include <resnet/data/gzip.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace resnet::data {

namespace detail {

inline uint32_t big_endian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
      (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

} // namespace detail

/// Decodes an IDX array into a tensor of its element type (uint8, int8,
/// int16, int32, float32 or float64) and its dimensions (1 to 8 of them).
/// The data must be exactly as long as the dimensions say. Raises a
/// `c10::Error` naming `what` otherwise.
inline torch::Tensor decode_idx(
    const uint8_t* data,
    size_t size,
    const std::string& what = "IDX data") {
  TORCH_CHECK(
      size >= 4 && data[0] == 0 && data[1] == 0,
      "resnet: '",
      what,
      "' is not an IDX file (expected two zero bytes, a type and a rank)");
  torch::ScalarType dtype;
  size_t width = 1;
  switch (data[2]) {
    case 0x08:
      dtype = torch::kByte;
      width = 1;
      break;
    case 0x09:
      dtype = torch::kChar;
      width = 1;
      break;
    case 0x0B:
      dtype = torch::kShort;
      width = 2;
      break;
    case 0x0C:
      dtype = torch::kInt;
      width = 4;
      break;
    case 0x0D:
      dtype = torch::kFloat;
      width = 4;
      break;
    case 0x0E:
      dtype = torch::kDouble;
      width = 8;
      break;
    default:
      TORCH_CHECK(
          false,
          "resnet: '",
          what,
          "': unknown IDX element type 0x",
          std::hex,
          static_cast<int>(data[2]));
  }
  const size_t rank = data[3];
  TORCH_CHECK(
      rank >= 1 && rank <= 8,
      "resnet: '",
      what,
      "': IDX rank ",
      rank,
      " (expected 1 to 8)");
  const size_t header = 4 + 4 * rank;
  TORCH_CHECK(
      size >= header,
      "resnet: '",
      what,
      "' ends inside its IDX header (",
      size,
      " bytes)");
  std::vector<int64_t> sizes;
  size_t elements = 1;
  bool overflow = false;
  for (size_t d = 0; d < rank; ++d) {
    const uint32_t n = detail::big_endian32(data + 4 + 4 * d);
    sizes.push_back(static_cast<int64_t>(n));
    // The product stays below 2^64 / 2^32 before each step, or overflows.
    if (n != 0 && elements > (size_t{1} << 62) / n) {
      overflow = true;
    }
    elements *= n;
  }
  const size_t body = size - header;
  TORCH_CHECK(
      !overflow && elements <= body / width && elements * width == body,
      "resnet: '",
      what,
      "': the IDX header says ",
      c10::IntArrayRef(sizes),
      " elements of ",
      width,
      " bytes, the file has ",
      body,
      " bytes after the header");
  auto out = torch::empty(sizes, torch::TensorOptions().dtype(dtype));
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  if (body == 0) {
    return out;
  }
  if (width == 1) {
    std::memcpy(dst, data + header, body);
  } else {
    const uint8_t* src = data + header;
    for (size_t i = 0; i < elements; ++i) {
      for (size_t b = 0; b < width; ++b) {
        dst[i * width + b] = src[i * width + (width - 1 - b)];
      }
    }
  }
  return out;
}

/// The IDX file at `path` (gzipped or not) as a tensor; see `decode_idx`.
inline torch::Tensor read_idx(const std::string& path) {
  const auto bytes = read_maybe_gzip(path);
  return decode_idx(bytes.data(), bytes.size(), path);
}

} // namespace resnet::data
