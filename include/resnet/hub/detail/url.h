#pragma once

// URLs with libcurl's parser (CURLU): the origin a token belongs to, where a
// redirect leads, and the quoting of a revision or file name in a path.

#include <memory>
#include <optional>
#include <string>

#include <curl/curl.h>

namespace resnet::hub::detail {

/// The origin "scheme://host:port" of a URL (default ports filled in), or
/// "" when libcurl cannot parse it.
inline std::string url_origin(const std::string& url) {
  std::unique_ptr<CURLU, void (*)(CURLU*)> parsed(
      curl_url(), &curl_url_cleanup);
  if (!parsed || curl_url_set(parsed.get(), CURLUPART_URL, url.c_str(), 0)) {
    return "";
  }
  std::string origin;
  const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
  const char* separators[] = {"://", ":", ""};
  for (int i = 0; i < 3; ++i) {
    char* value = nullptr;
    if (curl_url_get(parsed.get(), parts[i], &value, CURLU_DEFAULT_PORT)) {
      return "";
    }
    for (const char* c = value; *c; ++c) {
      origin +=
          static_cast<char>((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
    }
    origin += separators[i];
    curl_free(value);
  }
  return origin;
}

/// `location` (absolute, or relative as redirects may be) against `base`;
/// nullopt when libcurl cannot make a URL of it.
inline std::optional<std::string> url_resolve(
    const std::string& base,
    const std::string& location) {
  std::unique_ptr<CURLU, void (*)(CURLU*)> parsed(
      curl_url(), &curl_url_cleanup);
  char* value = nullptr;
  if (!parsed || curl_url_set(parsed.get(), CURLUPART_URL, base.c_str(), 0) ||
      curl_url_set(parsed.get(), CURLUPART_URL, location.c_str(), 0) ||
      curl_url_get(parsed.get(), CURLUPART_URL, &value, 0)) {
    return std::nullopt;
  }
  std::string out = value;
  curl_free(value);
  return out;
}

/// Percent-encodes all but RFC 3986's unreserved characters (and '/' when
/// `keep_slashes`), as Python's urllib.parse.quote does.
inline std::string url_quote(const std::string& text, bool keep_slashes) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
        c == '~' || (keep_slashes && c == '/');
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kDigits[c >> 4];
      out += kDigits[c & 0xf];
    }
  }
  return out;
}

} // namespace resnet::hub::detail
