#pragma once

// Environment variables read the way Python reads them: os.getenv,
// os.path.expanduser ("~" and "~/..."), os.path.expandvars ($NAME, ${NAME},
// unknown names kept as written) and huggingface_hub's truthy values.

#include <cctype>
#include <cstdlib>
#include <optional>
#include <string>

#include <pwd.h>
#include <unistd.h>

namespace resnet::hub::detail {

/// The variable's value; nullopt when it is unset or empty (an empty path
/// or endpoint is taken as "not set").
inline std::optional<std::string> env_value(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    return std::nullopt;
  }
  return std::string(value);
}

/// The user's home folder: $HOME, else the password database's entry.
inline std::string home_folder() {
  if (auto home = env_value("HOME")) {
    return *home;
  }
  if (const passwd* entry = getpwuid(getuid())) {
    if (entry->pw_dir != nullptr) {
      return entry->pw_dir;
    }
  }
  return "/";
}

/// "~" and "~/rest" with the home folder in front; anything else unchanged.
inline std::string expand_user(const std::string& path) {
  if (path == "~") {
    return home_folder();
  }
  if (path.rfind("~/", 0) == 0) {
    return home_folder() + path.substr(1);
  }
  return path;
}

/// $NAME and ${NAME} replaced by set variables; unknown ones stay as written.
inline std::string expand_vars(const std::string& path) {
  std::string out;
  for (size_t i = 0; i < path.size();) {
    if (path[i] != '$' || i + 1 == path.size()) {
      out += path[i++];
      continue;
    }
    const bool braced = path[i + 1] == '{';
    size_t begin = i + (braced ? 2 : 1);
    size_t end = begin;
    while (end < path.size() &&
           (std::isalnum(static_cast<unsigned char>(path[end])) ||
            path[end] == '_')) {
      ++end;
    }
    const bool closed = !braced || (end < path.size() && path[end] == '}');
    const char* value = nullptr;
    if (end > begin && closed) {
      value = std::getenv(path.substr(begin, end - begin).c_str());
    }
    if (value == nullptr) {
      out += path[i++];
      continue;
    }
    out += value;
    i = end + (braced ? 1 : 0);
  }
  return out;
}

/// huggingface_hub's truthy values: 1, ON, YES, TRUE in any case.
inline bool is_truthy(const std::optional<std::string>& value) {
  if (!value) {
    return false;
  }
  std::string upper;
  for (char c : *value) {
    upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return upper == "1" || upper == "ON" || upper == "YES" || upper == "TRUE";
}

/// A token as huggingface_hub cleans it: line breaks dropped, surrounding
/// blanks trimmed.
inline std::string clean_token(const std::string& raw) {
  std::string token;
  for (char c : raw) {
    if (c != '\r' && c != '\n') {
      token += c;
    }
  }
  const auto first = token.find_first_not_of(" \t\f\v");
  if (first == std::string::npos) {
    return "";
  }
  const auto last = token.find_last_not_of(" \t\f\v");
  return token.substr(first, last - first + 1);
}

} // namespace resnet::hub::detail
