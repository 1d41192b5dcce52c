#pragma once

// Opening a file to read it, for every reader of the library: only regular
// files are opened, and the check comes before anything could block (a FIFO
// or a device opened for reading waits for a writer, or forever).

#include <resnet/config.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if RESNET_HAS_POSIX_FILES
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#include <fstream>
#endif

namespace resnet::detail {

#if RESNET_HAS_POSIX_FILES
/// What a file that is not a regular file is, for the error.
inline const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) {
    return "a directory";
  }
  if (S_ISFIFO(mode)) {
    return "a FIFO (named pipe)";
  }
  if (S_ISCHR(mode)) {
    return "a character device";
  }
  if (S_ISBLK(mode)) {
    return "a block device";
  }
  if (S_ISSOCK(mode)) {
    return "a socket";
  }
  return "not a regular file";
}
#endif

/// A regular file open for reading at given offsets. Anything else (a FIFO,
/// a device, a directory, a socket) is refused before it is opened, and
/// again after (in case it was swapped in between), so that opening never
/// blocks. Errors are `c10::Error`s that do not name the path: callers add
/// it.
class ReadableFile {
 public:
  explicit ReadableFile(const std::string& path) {
#if RESNET_HAS_POSIX_FILES
    struct stat st {};
    TORCH_CHECK(
        ::stat(path.c_str(), &st) == 0,
        "cannot open it: ",
        std::strerror(errno));
    TORCH_CHECK(
        S_ISREG(st.st_mode),
        "it is ",
        file_type_name(st.st_mode),
        ", not a regular file; only regular files are read");
    // O_NONBLOCK: should a FIFO have replaced the file since, open returns
    // at once instead of waiting for a writer.
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    TORCH_CHECK(fd_ >= 0, "cannot open it: ", std::strerror(errno));
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      TORCH_CHECK(
          false, "it is not a regular file; only regular files are read");
    }
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) {
      ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
    }
    size_ = static_cast<uint64_t>(st.st_size);
#else
    in_.open(path, std::ios::binary);
    TORCH_CHECK(in_, "cannot open it");
    in_.seekg(0, std::ios::end);
    const auto end = in_.tellg();
    TORCH_CHECK(end >= 0, "cannot find its size");
    size_ = static_cast<uint64_t>(end);
#endif
  }
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;
  ~ReadableFile() {
#if RESNET_HAS_POSIX_FILES
    ::close(fd_);
#endif
  }

  /// The size when it was opened.
  uint64_t size() const {
    return size_;
  }

#if RESNET_HAS_POSIX_FILES
  /// The open descriptor (for mapping).
  int descriptor() const {
    return fd_;
  }
#endif

  /// Reads exactly `n` bytes at `offset` into `out`.
  void read(uint64_t offset, char* out, uint64_t n) {
#if RESNET_HAS_POSIX_FILES
    constexpr uint64_t kChunk = uint64_t{1} << 30;
    while (n > 0) {
      const auto got = ::pread(
          fd_,
          out,
          static_cast<size_t>(std::min(n, kChunk)),
          static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) {
        continue;
      }
      TORCH_CHECK(
          got > 0,
          "reading ",
          n,
          " bytes at offset ",
          offset,
          " failed: ",
          got < 0 ? std::strerror(errno) : "the file ended early");
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
#else
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(out, static_cast<std::streamsize>(n));
    TORCH_CHECK(
        in_.gcount() == static_cast<std::streamsize>(n),
        "reading ",
        n,
        " bytes at offset ",
        offset,
        " failed");
#endif
  }

  /// The first `n` bytes, or the whole file if it is shorter.
  std::string head(size_t n) {
    std::string out(static_cast<size_t>(std::min<uint64_t>(n, size_)), '\0');
    if (!out.empty()) {
      read(0, &out[0], out.size());
    }
    return out;
  }

  /// The whole file.
  std::vector<char> read_all() {
    std::vector<char> bytes(static_cast<size_t>(size_));
    if (!bytes.empty()) {
      read(0, bytes.data(), bytes.size());
    }
    return bytes;
  }

 private:
#if RESNET_HAS_POSIX_FILES
  int fd_ = -1;
#else
  std::ifstream in_;
#endif
  uint64_t size_ = 0;
};

} // namespace resnet::detail
