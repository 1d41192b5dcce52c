#pragma once

// Named tensors and the file primitives the weight readers and writers share:
// reading a whole file, and writing one atomically.

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace resnet {

/// Named tensors in PyTorch's state_dict order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

/// Writes `size` bytes at `data` to `path` so that readers see the old file
/// or the new one, never a part: a temporary file beside it (named after the
/// process), flushed to disk, renamed over `path`. Raises a `c10::Error`
/// naming the path on failure, leaving any old file as it was.
inline void
write_file_atomically(const std::string& path, const char* data, size_t size) {
  std::string tmp = path + ".tmp";
#if defined(__unix__) || defined(__APPLE__)
  tmp += ".";
  tmp += std::to_string(::getpid());
#endif
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TORCH_CHECK(f, "resnet: cannot open '", tmp, "' for writing");
  bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  ok = std::fflush(f) == 0 && ok;
#if defined(__unix__) || defined(__APPLE__)
  ok = ::fsync(::fileno(f)) == 0 && ok;
#endif
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "resnet: failed to write '", path, "'");
  }
}

/// `write_file_atomically` for a byte vector or string.
template <class Bytes>
void write_file_atomically(const std::string& path, const Bytes& bytes) {
  write_file_atomically(
      path, reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

namespace detail {

/// The whole file at `path`; a `c10::Error` naming it if it cannot be read.
inline std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "resnet: cannot open '", path, "' for reading");
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  TORCH_CHECK(end >= 0, "resnet: cannot read '", path, "'");
  in.seekg(0, std::ios::beg);
  std::vector<char> bytes(static_cast<size_t>(end));
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TORCH_CHECK(
      in.gcount() == static_cast<std::streamsize>(bytes.size()),
      "resnet: error while reading '",
      path,
      "'");
  return bytes;
}

} // namespace detail

} // namespace resnet
