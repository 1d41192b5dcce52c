#pragma once

// Reading data files that may be gzip-compressed, with zlib (Debian:
// zlib1g-dev; link ZLIB::ZLIB). Not part of <resnet/resnet.h>.

#include <resnet/io/files.h>

#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace resnet::data {

/// The most bytes a decompressed file may have unless a caller says
/// otherwise: larger outputs are refused rather than exhausting memory (a
/// few kilobytes of gzip can claim gigabytes).
inline constexpr size_t kMaxDecompressedBytes = size_t{16} << 30;

/// Whether `data` starts with gzip's magic bytes.
inline bool is_gzip(const uint8_t* data, size_t size) {
  return size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

/// `data` itself, or its decompression when it is gzip (several members
/// are concatenated, as gunzip does). Raises a `c10::Error` naming `what`
/// when the stream is damaged, truncated or larger than `max_bytes`.
inline std::vector<uint8_t> maybe_gunzip(
    const uint8_t* data,
    size_t size,
    const std::string& what,
    size_t max_bytes = kMaxDecompressedBytes) {
  if (!is_gzip(data, size)) {
    TORCH_CHECK(
        size <= max_bytes,
        "resnet: '",
        what,
        "' is larger than ",
        max_bytes,
        " bytes");
    return std::vector<uint8_t>(data, data + size);
  }
  std::vector<uint8_t> out;
  size_t at = 0;
  // One member per round; anything after the last member that is not
  // another member is refused, as trailing garbage.
  while (at < size) {
    TORCH_CHECK(
        is_gzip(data + at, size - at),
        "resnet: '",
        what,
        "': unexpected bytes after the gzip stream at ",
        at);
    z_stream z{};
    // 16 + MAX_WBITS: a gzip header and trailer, not a raw zlib stream.
    TORCH_CHECK(
        inflateInit2(&z, 16 + MAX_WBITS) == Z_OK,
        "resnet: zlib failed to start for '",
        what,
        "'");
    z.next_in = const_cast<Bytef*>(data + at);
    int rc = Z_OK;
    std::string failure;
    while (rc == Z_OK) {
      const size_t avail_in = size - at - z.total_in;
      z.avail_in = static_cast<uInt>(std::min<size_t>(avail_in, 1u << 30));
      if (out.size() == out.capacity() || out.capacity() - out.size() < 4096) {
        out.reserve(std::max<size_t>(out.capacity() * 2, 1u << 16));
      }
      const size_t before = out.size();
      const size_t room = std::min<size_t>(out.capacity() - before, 1u << 30);
      out.resize(before + room);
      z.next_out = out.data() + before;
      z.avail_out = static_cast<uInt>(room);
      rc = inflate(&z, Z_NO_FLUSH);
      out.resize(before + (room - z.avail_out));
      if (rc == Z_BUF_ERROR && z.avail_in == 0) {
        failure = "truncated gzip stream";
      } else if (rc != Z_OK && rc != Z_STREAM_END) {
        failure = z.msg ? z.msg : "damaged gzip stream";
      } else if (out.size() > max_bytes) {
        failure =
            "decompresses to more than " + std::to_string(max_bytes) + " bytes";
      }
      if (!failure.empty()) {
        break;
      }
    }
    const size_t used = z.total_in;
    inflateEnd(&z);
    TORCH_CHECK(failure.empty(), "resnet: '", what, "': ", failure);
    at += used;
  }
  out.shrink_to_fit();
  return out;
}

/// The content of the file at `path`, decompressed when it is gzip.
inline std::vector<uint8_t> read_maybe_gzip(
    const std::string& path,
    size_t max_bytes = kMaxDecompressedBytes) {
  const auto bytes = resnet::read_file(path);
  return maybe_gunzip(
      reinterpret_cast<const uint8_t*>(bytes.data()),
      bytes.size(),
      path,
      max_bytes);
}

} // namespace resnet::data
