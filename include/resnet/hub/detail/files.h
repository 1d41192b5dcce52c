#pragma once

// The cache's file operations: folders, small text files written
// atomically, snapshot symlinks replaced atomically, and the advisory lock
// (flock) that huggingface_hub's filelock also takes, so that processes of
// either language wait for each other.

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace resnet::hub::detail {

namespace fs = std::filesystem;

/// A name unique to this process and call, for temporary files beside a
/// destination: "<pid>.<random hex>".
inline std::string unique_suffix() {
  static thread_local std::mt19937_64 generator{std::random_device{}()};
  std::ostringstream out;
  out << getpid() << "." << std::hex << (generator() & 0xffffffffu);
  return out.str();
}

/// Creates `folder` and its parents; an existing folder is fine.
inline void make_folders(const fs::path& folder) {
  if (folder.empty()) {
    return;
  }
  std::error_code error;
  fs::create_directories(folder, error);
  if (error && !fs::is_directory(folder)) {
    throw std::runtime_error(
        "resnet: cannot create the folder " + folder.string() + ": " +
        error.message() + "; check its permissions or point the cache " +
        "variable (TORCH_HOME, HF_HOME, HF_HUB_CACHE) elsewhere");
  }
}

/// Whether `path` names a regular file, following symlinks.
inline bool is_file(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);
}

/// Removes a file if it is there; never throws.
inline void remove_quietly(const fs::path& path) {
  std::error_code error;
  fs::remove(path, error);
}

/// The file's text; nullopt when it cannot be read.
inline std::optional<std::string> read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Moves `from` onto `to` in one step (rename(2)); throws naming both.
inline void move_into_place(const fs::path& from, const fs::path& to) {
  std::error_code error;
  fs::rename(from, to, error);
  if (error) {
    throw std::runtime_error(
        "resnet: cannot move " + from.string() + " to " + to.string() + ": " +
        error.message() + "; check the folder's permissions and free space");
  }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a
/// reader sees the old text or the new, never a part.
inline void write_text_atomically(
    const fs::path& path,
    const std::string& text) {
  const fs::path temporary = path.string() + "." + unique_suffix() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      remove_quietly(temporary);
      throw std::runtime_error(
          "resnet: cannot write " + temporary.string() +
          "; check the folder's permissions and free space");
    }
  }
  move_into_place(temporary, path);
}

/// Makes `link` a symlink whose text is `target` (relative to the link's
/// folder), replacing what was there in one step.
inline void replace_symlink(const std::string& target, const fs::path& link) {
  const fs::path temporary = link.string() + "." + unique_suffix() + ".tmp";
  std::error_code error;
  fs::create_symlink(target, temporary, error);
  if (error) {
    throw std::runtime_error(
        "resnet: cannot create the symlink " + temporary.string() + " -> " +
        target + ": " + error.message() +
        "; the cache's file system must support symlinks");
  }
  move_into_place(temporary, link);
}

/// An exclusive flock(2) on a lock file, held for the object's lifetime.
/// Python's filelock (used by huggingface_hub) takes the same kind of lock,
/// so a C++ and a Python process fetching one blob wait for each other.
class FileLock {
 public:
  /// Creates `path` if needed and waits until the lock is ours.
  explicit FileLock(const fs::path& path) {
    make_folders(path.parent_path());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw std::runtime_error(
          "resnet: cannot open the lock file " + path.string() + ": " +
          std::strerror(errno) + "; check the cache folder's permissions");
    }
    int rc = 0;
    do {
      rc = ::flock(fd_, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int saved = errno;
      ::close(fd_);
      throw std::runtime_error(
          "resnet: cannot lock " + path.string() + ": " + std::strerror(saved) +
          "; the file system must support flock");
    }
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

} // namespace resnet::hub::detail
