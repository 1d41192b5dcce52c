#pragma once

// Checks of the names that become paths in the Hub's cache and parts of its
// URLs: repository ids, file names inside a repository, revisions.

#include <algorithm>
#include <stdexcept>
#include <string>

namespace resnet::hub::detail {

/// Whether `path` is a relative path with no empty, "." or ".." part.
inline bool is_plain_relative_path(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') {
    return false;
  }
  size_t start = 0;
  while (start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return false;
    }
    start = end + 1;
  }
  return path.find('\0') == std::string::npos;
}

/// Throws unless `repo_id` is "name" or "org/name" of letters, digits, '-',
/// '_' and '.', not starting or ending with '-' or '.', no "--" or "..".
inline void check_repo_id(const std::string& repo_id) {
  const auto slash = repo_id.find('/');
  bool ok = !repo_id.empty() && repo_id.size() <= 96 &&
      repo_id.find('/', slash == std::string::npos ? 0 : slash + 1) ==
          std::string::npos &&
      repo_id.find("--") == std::string::npos &&
      repo_id.find("..") == std::string::npos;
  for (char c : repo_id) {
    ok = ok &&
        ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
         c == '/');
  }
  for (const std::string& part :
       {repo_id.substr(0, slash),
        slash == std::string::npos ? std::string("x")
                                   : repo_id.substr(slash + 1)}) {
    ok = ok && !part.empty() && part.front() != '-' && part.front() != '.' &&
        part.back() != '-' && part.back() != '.';
  }
  if (!ok) {
    throw std::invalid_argument(
        "resnet: '" + repo_id.substr(0, 200) +
        "' is not a Hub repository id; expected 'name' or 'org/name' of " +
        "letters, digits, '-', '_' and '.'");
  }
}

/// Throws unless `filename` is a plain relative path inside a repository.
inline void check_repo_filename(const std::string& filename) {
  if (!is_plain_relative_path(filename)) {
    throw std::invalid_argument(
        "resnet: '" + filename.substr(0, 200) +
        "' is not a file name inside a repository; expected a relative path " +
        "without '.', '..' or empty parts");
  }
}

/// Throws unless `revision` is a branch, tag or commit usable as a path
/// under refs/.
inline void check_revision(const std::string& revision) {
  if (!is_plain_relative_path(revision)) {
    throw std::invalid_argument(
        "resnet: '" + revision.substr(0, 200) +
        "' is not a revision; expected a branch, tag or commit hash such as " +
        "'main'");
  }
}

/// Whether `text` can be one file name in a cache folder: letters, digits,
/// '-', '_', '.', not "." or "..".
inline bool is_cache_name(const std::string& text) {
  if (text.empty() || text == "." || text == ".." || text.size() > 255) {
    return false;
  }
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) {
      return false;
    }
  }
  return true;
}

} // namespace resnet::hub::detail
