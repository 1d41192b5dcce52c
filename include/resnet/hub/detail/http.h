#pragma once

// HTTP with libcurl: a HEAD that reports what the server answered (the Hub
// puts a file's metadata in its headers), and a GET into a partial file that
// resumes with a Range request. Both retry connection errors, 429 and 5xx a
// bounded number of times with a doubling delay, never 4xx. libcurl reads
// proxies from the environment (http_proxy, https_proxy, no_proxy) as it
// does by default.

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <resnet/hub/detail/url.h>

#include <curl/curl.h>
#include <unistd.h>

namespace resnet::hub::detail {

/// How requests are made.
struct HttpSettings {
  /// Tries for one request, the first included.
  int tries = 3;
  /// The wait before the second try; doubled before each further one.
  std::chrono::milliseconds retry_delay{500};
  /// Seconds to wait for a connection.
  long connect_timeout_s = 10;
  /// A transfer slower than low_speed_bytes_per_s for this many seconds is
  /// abandoned (and retried).
  long low_speed_time_s = 30;
  /// See low_speed_time_s.
  long low_speed_bytes_per_s = 1024;
  /// Whether to draw a progress line on stderr.
  bool progress = false;
  /// Sent as "Authorization: Bearer <token>" to token_origin only.
  std::string token;
  /// "scheme://host:port" of the server the token belongs to.
  std::string token_origin;
  /// The User-Agent header.
  std::string user_agent = "resnet";
};

/// A request that failed: `status` is the HTTP status, 0 when no answer came.
class HttpError : public std::runtime_error {
 public:
  /// The message and the status.
  HttpError(const std::string& message, long status)
      : std::runtime_error(message), status_(status) {}
  /// The HTTP status, or 0 for a connection error.
  long status() const {
    return status_;
  }

 private:
  long status_;
};

/// Response headers by lower-case name (the last response's only).
using HeaderMap = std::map<std::string, std::string>;

/// What a HEAD request got back.
struct HttpResponse {
  /// The HTTP status.
  long status = 0;
  /// The headers, by lower-case name.
  HeaderMap headers;
  /// A header's value, or "" when absent.
  std::string header(const std::string& lower_case_name) const {
    auto found = headers.find(lower_case_name);
    return found == headers.end() ? std::string() : found->second;
  }
};

/// libcurl's global state, set up once per process.
inline void curl_global_setup() {
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    throw std::runtime_error(
        std::string("resnet: libcurl failed to start: ") +
        curl_easy_strerror(rc));
  }
}

/// Collects response headers; a new status line starts a new set.
inline size_t
on_curl_header(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<HeaderMap*>(user);
  std::string line(data, size * count);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.pop_back();
  }
  if (line.rfind("HTTP/", 0) == 0) {
    headers->clear();
    return size * count;
  }
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) {
      c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    }
    const auto start = line.find_first_not_of(" \t", colon + 1);
    (*headers)[name] =
        start == std::string::npos ? std::string() : line.substr(start);
  }
  return size * count;
}

/// One easy handle and its header list.
class CurlRequest {
 public:
  /// A request for `url` with `settings`'s timeouts, agent and token.
  CurlRequest(
      const std::string& url,
      const HttpSettings& settings,
      const std::vector<std::string>& extra_headers) {
    curl_global_setup();
    handle_ = curl_easy_init();
    if (handle_ == nullptr) {
      throw std::runtime_error("resnet: libcurl could not make a request");
    }
    curl_easy_setopt(handle_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(handle_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(handle_, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(
        handle_, CURLOPT_CONNECTTIMEOUT, settings.connect_timeout_s);
    curl_easy_setopt(
        handle_, CURLOPT_LOW_SPEED_TIME, settings.low_speed_time_s);
    curl_easy_setopt(
        handle_, CURLOPT_LOW_SPEED_LIMIT, settings.low_speed_bytes_per_s);
    curl_easy_setopt(handle_, CURLOPT_USERAGENT, settings.user_agent.c_str());
    curl_easy_setopt(handle_, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(handle_, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(handle_, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(
        handle_, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
    curl_easy_setopt(
        handle_, CURLOPT_REDIR_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(handle_, CURLOPT_HEADERFUNCTION, &on_curl_header);
    curl_easy_setopt(handle_, CURLOPT_HEADERDATA, &headers_);
    curl_easy_setopt(handle_, CURLOPT_ERRORBUFFER, error_);
    for (const auto& header : extra_headers) {
      list_ = curl_slist_append(list_, header.c_str());
    }
    // libcurl sends a custom Authorization header to the first host only,
    // not to a host a redirect leads to (CURLOPT_UNRESTRICTED_AUTH is off).
    if (!settings.token.empty() && url_origin(url) == settings.token_origin) {
      list_ = curl_slist_append(
          list_, ("Authorization: Bearer " + settings.token).c_str());
    }
    curl_easy_setopt(handle_, CURLOPT_HTTPHEADER, list_);
  }
  ~CurlRequest() {
    curl_easy_cleanup(handle_);
    curl_slist_free_all(list_);
  }
  CurlRequest(const CurlRequest&) = delete;
  CurlRequest& operator=(const CurlRequest&) = delete;

  /// The handle, for further options.
  CURL* get() const {
    return handle_;
  }
  /// Runs the request; the status stays readable with status().
  CURLcode perform() {
    error_[0] = '\0';
    return curl_easy_perform(handle_);
  }
  /// The last response's HTTP status (0 when none came).
  long status() const {
    long status = 0;
    curl_easy_getinfo(handle_, CURLINFO_RESPONSE_CODE, &status);
    return status;
  }
  /// The last response's headers.
  const HeaderMap& headers() const {
    return headers_;
  }
  /// libcurl's words for a failed transfer.
  std::string describe(CURLcode code) const {
    return error_[0] != '\0' ? std::string(error_) : curl_easy_strerror(code);
  }

 private:
  CURL* handle_ = nullptr;
  curl_slist* list_ = nullptr;
  HeaderMap headers_;
  char error_[CURL_ERROR_SIZE] = {};
};

/// Whether a status is worth another try: 429 and 5xx.
inline bool retryable_status(long status) {
  return status == 429 || status >= 500;
}

/// Whether a libcurl failure is a passing network condition.
inline bool retryable_curl(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

/// Sleeps before try `next` (2, 3, ...): retry_delay, doubled each time.
inline void back_off(const HttpSettings& settings, int next) {
  std::this_thread::sleep_for(settings.retry_delay * (1 << (next - 2)));
}

/// HEAD `url` without following redirects; retries connection errors, 429
/// and 5xx. Returns whatever status came last; throws HttpError (status 0)
/// when no answer came at all.
inline HttpResponse http_head(
    const std::string& url,
    const HttpSettings& settings) {
  std::string failure;
  for (int attempt = 1; attempt <= settings.tries; ++attempt) {
    if (attempt > 1) {
      back_off(settings, attempt);
    }
    CurlRequest request(url, settings, {"Accept-Encoding: identity"});
    curl_easy_setopt(request.get(), CURLOPT_NOBODY, 1L);
    curl_easy_setopt(request.get(), CURLOPT_FOLLOWLOCATION, 0L);
    const CURLcode code = request.perform();
    const long status = request.status();
    if (code == CURLE_OK || code == CURLE_HTTP_RETURNED_ERROR) {
      if (retryable_status(status) && attempt < settings.tries) {
        continue;
      }
      return HttpResponse{status, request.headers()};
    }
    failure = request.describe(code);
    if (!retryable_curl(code)) {
      break;
    }
  }
  throw HttpError(
      "resnet: cannot reach " + url + " (" + failure +
          "); check the network, the proxy variables (https_proxy, " +
          "no_proxy) or the endpoint",
      0);
}

/// Where a GET writes: the partial file, from where it resumed.
struct BodySink {
  std::FILE* file = nullptr;
  CURL* handle = nullptr;
  const HeaderMap* headers = nullptr;
  std::uint64_t offset = 0;
  bool started = false;
  bool range_mismatch = false;
  // Progress line.
  bool progress = false;
  std::string label;
  std::chrono::steady_clock::time_point last_drawn{};
  bool drawn = false;
  curl_off_t last_now = -1;
};

/// The first body bytes decide: 206 appends at the offset asked for, 200
/// (a server that ignored Range) starts the file over.
inline size_t on_curl_body(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  if (!sink->started) {
    sink->started = true;
    long status = 0;
    curl_easy_getinfo(sink->handle, CURLINFO_RESPONSE_CODE, &status);
    if (status == 206) {
      auto range = sink->headers->find("content-range");
      const std::string expected =
          "bytes " + std::to_string(sink->offset) + "-";
      if (range == sink->headers->end() ||
          range->second.rfind(expected, 0) != 0) {
        sink->range_mismatch = true;
        return 0;
      }
    } else if (sink->offset > 0) {
      if (::ftruncate(fileno(sink->file), 0) != 0) {
        return 0;
      }
      sink->offset = 0;
    }
  }
  return std::fwrite(data, size, count, sink->file) * size;
}

/// Draws "label  42%  10.5 / 25.0 MiB" over itself, ten times a second.
inline int on_curl_progress(
    void* user,
    curl_off_t total,
    curl_off_t now,
    curl_off_t,
    curl_off_t) {
  auto* sink = static_cast<BodySink*>(user);
  const auto clock = std::chrono::steady_clock::now();
  const bool soon =
      sink->drawn && clock - sink->last_drawn < std::chrono::milliseconds(100);
  if (!sink->progress || total <= 0 || now == sink->last_now ||
      (soon && now < total)) {
    return 0;
  }
  sink->last_now = now;
  const double mib = 1024.0 * 1024.0;
  const double done = static_cast<double>(sink->offset + now);
  const double all = static_cast<double>(sink->offset + total);
  std::fprintf(
      stderr,
      "\r%s  %3d%%  %.1f / %.1f MiB",
      sink->label.c_str(),
      static_cast<int>(100.0 * done / all),
      done / mib,
      all / mib);
  sink->drawn = true;
  sink->last_drawn = clock;
  return 0;
}

/// GETs `url` (following redirects) into `partial`, resuming what is there
/// with a Range request. Retries as http_head does; a partial file that the
/// server's range does not continue is started over. Throws HttpError.
inline void http_download(
    const std::string& url,
    const std::filesystem::path& partial,
    const HttpSettings& settings,
    const std::string& label) {
  std::string failure;
  long failed_status = 0;
  for (int attempt = 1; attempt <= settings.tries; ++attempt) {
    if (attempt > 1 && failed_status != 416) {
      back_off(settings, attempt);
    }
    std::error_code error;
    const auto size = std::filesystem::file_size(partial, error);
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(
        std::fopen(partial.c_str(), "ab"), &std::fclose);
    if (!file) {
      throw std::runtime_error(
          "resnet: cannot write " + partial.string() + ": " +
          std::strerror(errno) + "; check the cache folder's permissions");
    }
    CurlRequest request(url, settings, {});
    BodySink sink;
    sink.file = file.get();
    sink.handle = request.get();
    sink.headers = &request.headers();
    sink.offset = error ? 0 : size;
    sink.progress = settings.progress;
    sink.label = label;
    curl_easy_setopt(request.get(), CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(request.get(), CURLOPT_WRITEFUNCTION, &on_curl_body);
    curl_easy_setopt(request.get(), CURLOPT_WRITEDATA, &sink);
    if (sink.offset > 0) {
      const std::string range = std::to_string(sink.offset) + "-";
      curl_easy_setopt(request.get(), CURLOPT_RANGE, range.c_str());
    }
    if (settings.progress) {
      curl_easy_setopt(request.get(), CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(
          request.get(), CURLOPT_XFERINFOFUNCTION, &on_curl_progress);
      curl_easy_setopt(request.get(), CURLOPT_XFERINFODATA, &sink);
    }
    const CURLcode code = request.perform();
    const long status = request.status();
    const bool flushed = std::fflush(file.get()) == 0;
    if (sink.drawn) {
      std::fputc('\n', stderr);
    }
    failed_status = 0;
    if (code == CURLE_OK && status != 200 && status != 206) {
      throw HttpError(
          "resnet: " + url + " answered HTTP " + std::to_string(status) +
              " where the file was expected",
          status);
    }
    if (code == CURLE_OK && flushed) {
      if (status != 206 && !sink.started && sink.offset > 0) {
        // A full answer with no body: the file is empty.
        if (::ftruncate(fileno(file.get()), 0) != 0) {
          failure = std::strerror(errno);
          break;
        }
      }
      return;
    }
    if (code == CURLE_OK ||
        (code == CURLE_WRITE_ERROR && !sink.range_mismatch)) {
      throw std::runtime_error(
          "resnet: cannot write " + partial.string() + " (" +
          std::strerror(errno) + "); check the free space of its folder");
    }
    if (sink.range_mismatch ||
        (code == CURLE_HTTP_RETURNED_ERROR && status == 416)) {
      // The partial file does not fit what the server has: start over.
      file.reset();
      std::filesystem::remove(partial, error);
      failed_status = 416;
      failure = "the server's range did not continue " + partial.string();
      continue;
    }
    if (code == CURLE_HTTP_RETURNED_ERROR) {
      failure = "HTTP " + std::to_string(status);
      if (!retryable_status(status)) {
        throw HttpError("resnet: " + url + " answered " + failure, status);
      }
      failed_status = status;
      continue;
    }
    failure = request.describe(code);
    if (!retryable_curl(code)) {
      break;
    }
  }
  throw HttpError(
      "resnet: downloading " + url + " failed after " +
          std::to_string(settings.tries) + " tries (" + failure +
          "); what arrived is kept in " + partial.string() +
          " and the next try resumes it; check the network and the proxy " +
          "variables (https_proxy, no_proxy)",
      failed_status);
}

} // namespace resnet::hub::detail
