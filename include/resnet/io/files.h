#pragma once

// The file primitives every reader and writer of the library shares: reading
// a whole regular file, and writing one atomically.

#include <resnet/io/detail/file.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace resnet {

/// A file replaced in two steps, so that readers see the old file or the
/// new one, never a part: the constructor writes the bytes to a temporary
/// file beside `path` (named after the process) and flushes it to disk;
/// `commit` renames it over `path` and flushes the folder. An uncommitted
/// StagedFile removes its temporary file when destroyed. Failures raise a
/// `c10::Error` naming the path and leave any old file as it was.
class StagedFile {
 public:
  /// Writes `size` bytes at `data` to the temporary file for `path` and
  /// flushes them to disk; `path` itself is untouched until `commit`.
  StagedFile(std::string path, const char* data, size_t size)
      : path_(std::move(path)), tmp_(path_ + ".tmp") {
#if defined(__unix__) || defined(__APPLE__)
    tmp_ += ".";
    tmp_ += std::to_string(::getpid());
#endif
    std::FILE* f = std::fopen(tmp_.c_str(), "wb");
    TORCH_CHECK(f, "resnet: cannot open '", tmp_, "' for writing");
    bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
    ok = std::fflush(f) == 0 && ok;
#if defined(__unix__) || defined(__APPLE__)
    ok = ::fsync(::fileno(f)) == 0 && ok;
#endif
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      std::remove(tmp_.c_str());
      TORCH_CHECK(false, "resnet: failed to write '", path_, "'");
    }
  }
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  ~StagedFile() {
    if (!committed_) {
      std::remove(tmp_.c_str());
    }
  }

  /// Puts the new content in place.
  void commit() {
    TORCH_CHECK(!committed_, "resnet: '", path_, "' is already committed");
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      std::remove(tmp_.c_str());
      committed_ = true;
      TORCH_CHECK(false, "resnet: failed to write '", path_, "'");
    }
    committed_ = true;
#if defined(__unix__) || defined(__APPLE__)
    // The rename itself survives a power loss once the folder is flushed.
    const auto slash = path_.find_last_of('/');
    const std::string dir =
        slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    const int fd = ::open(dir.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
#endif
  }

 private:
  std::string path_;
  std::string tmp_;
  bool committed_ = false;
};

/// Writes `size` bytes at `data` to `path` atomically (see `StagedFile`):
/// readers see the old file or the new one, never a part.
inline void
write_file_atomically(const std::string& path, const char* data, size_t size) {
  StagedFile(path, data, size).commit();
}

/// `write_file_atomically` for a byte vector or string.
template <class Bytes>
void write_file_atomically(const std::string& path, const Bytes& bytes) {
  write_file_atomically(
      path, reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

/// The whole regular file at `path`; a `c10::Error` naming it if it cannot
/// be read (or is a FIFO, a device, a directory).
inline std::vector<char> read_file(const std::string& path) {
  try {
    return detail::ReadableFile(path).read_all();
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "resnet: cannot read '", path, "': ", e.msg());
  }
}

} // namespace resnet
