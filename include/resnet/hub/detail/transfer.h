#pragma once

// One file into a cache: under a lock, into a partial file (resumed if one is
// there), checked against the digest it must have, then renamed into place.
// A file that fails its check is deleted, so the cache never holds it.

#include <resnet/hub/detail/digest.h>
#include <resnet/hub/detail/files.h>
#include <resnet/hub/detail/http.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace resnet::hub::detail {

/// What a downloaded file must be; empty fields are not checked.
struct Expected {
  /// Hex SHA-256, or its first digits (torchvision's file names carry 8).
  std::string sha256;
  /// git's blob id (the Hub's ETag of a file kept outside LFS).
  std::string git_sha1;
  /// The size in bytes.
  std::optional<std::uint64_t> size;
};

/// Lower-case copy of `text`.
inline std::string lower_case(std::string text) {
  for (char& c : text) {
    c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return text;
}

/// Throws (and deletes `partial`) unless the file is what `expected` says.
inline void check_download(
    const std::string& url,
    const fs::path& partial,
    const Expected& expected) {
  std::string problem;
  std::error_code error;
  const std::uint64_t size = fs::file_size(partial, error);
  if (error) {
    throw std::runtime_error(
        "resnet: the download of " + url + " left no file at " +
        partial.string() + "; try again");
  }
  if (expected.size && *expected.size != size) {
    problem = "has " + std::to_string(size) + " bytes where the server " +
        "announced " + std::to_string(*expected.size);
  }
  if (problem.empty() && !expected.sha256.empty()) {
    const std::string digest = sha256_of_file(partial.string());
    const std::string want = lower_case(expected.sha256);
    if (digest.compare(0, want.size(), want) != 0) {
      problem = "has SHA-256 " + digest + " where " +
          (want.size() == digest.size() ? "" : "one starting with ") + want +
          " was expected";
    }
  }
  if (problem.empty() && !expected.git_sha1.empty()) {
    const std::string digest = git_blob_sha1_of_file(partial.string(), size);
    if (digest != lower_case(expected.git_sha1)) {
      problem = "has git blob id " + digest + " where " +
          lower_case(expected.git_sha1) + " (its ETag) was expected";
    }
  }
  if (!problem.empty()) {
    remove_quietly(partial);
    throw std::runtime_error(
        "resnet: the file downloaded from " + url + " " + problem +
        "; it was deleted and nothing was cached. Try again; if it fails " +
        "the same way, the server or a mirror serves other bytes than the " +
        "name promises");
  }
}

/// Downloads `url` to `destination` unless it is there: waits for
/// `lock_path`, writes `partial` (resuming what is there), checks it against
/// `expected` and renames it into place.
inline void download_checked(
    const std::string& url,
    const fs::path& destination,
    const fs::path& partial,
    const fs::path& lock_path,
    const Expected& expected,
    const HttpSettings& settings) {
  make_folders(destination.parent_path());
  FileLock lock(lock_path);
  if (is_file(destination)) {
    return; // another process fetched it while this one waited
  }
  try {
    http_download(url, partial, settings, destination.filename().string());
  } catch (...) {
    std::error_code error;
    if (fs::file_size(partial, error) == 0 && !error) {
      remove_quietly(partial);
    }
    throw;
  }
  check_download(url, partial, expected);
  move_into_place(partial, destination);
}

} // namespace resnet::hub::detail
