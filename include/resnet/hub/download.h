#pragma once

// Published weights fetched into the caches Python already uses (see
// cache.h): torchvision's files from download.pytorch.org into torch.hub's
// checkpoints folder, and files of Hugging Face Hub repositories into
// huggingface_hub's cache, as hf_hub_download stores them.
//
// Downloads go to "<file>.incomplete" beside the destination and resume from
// it with an HTTP Range request; the finished file is checked (SHA-256, or
// the Hub's ETag) before one rename puts it in place, and deleted when the
// check fails. A lock (flock) makes two processes that want one file download
// it once; for the Hub it is huggingface_hub's own lock file
// (<cache>/.locks/models--<org>--<name>/<etag>.lock), so Python waits too.
// Connection errors, 429 and 5xx are retried a few times with a growing
// delay; 4xx are not. libcurl takes proxies from the environment
// (https_proxy, no_proxy).
//
// Environment:
//   RESNET_TORCHVISION_URL  a mirror of https://download.pytorch.org/models
//   HF_ENDPOINT             the Hub (default https://huggingface.co)
//   HF_TOKEN                sent as "Authorization: Bearer" to HF_ENDPOINT's
//                           host only, never to the host a file's redirect
//                           leads to (a CDN), as huggingface_hub does
//   HF_HUB_OFFLINE          1/ON/YES/TRUE: only the cache is used
//   TORCH_HOME, HF_HOME, HF_HUB_CACHE, XDG_CACHE_HOME  where the caches are

#include <resnet/hub/cache.h>
#include <resnet/hub/detail/names.h>
#include <resnet/hub/detail/transfer.h>
#include <resnet/version.h>

#include <chrono>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>

#include <unistd.h>

namespace resnet::hub {

/// Where torchvision publishes its weights.
inline constexpr const char* kTorchvisionUrl =
    "https://download.pytorch.org/models";

/// How files are fetched. Empty strings take their value from the
/// environment (see the top of this header).
struct DownloadOptions {
  /// When to draw a progress line on stderr.
  enum class Progress {
    /// When stderr is a terminal.
    automatic,
    /// Always.
    always,
    /// Never.
    never,
  };

  /// Use only what is cached; a missing file is an error. For the Hub,
  /// HF_HUB_OFFLINE turns this on too.
  bool offline = false;
  /// download_file: the SHA-256 (hex) the file must have, or its first
  /// digits; empty: not checked. fetch_torchvision: empty takes the digits
  /// in the file name ("resnet18-f37072fd.pth"), as torch.hub's check_hash.
  std::string sha256;
  /// torch.hub's home; empty: torch_home().
  std::string torch_home;
  /// The Hub's cache; empty: hf_hub_cache().
  std::string hub_cache;
  /// The Hub's address; empty: hf_endpoint().
  std::string endpoint;
  /// A mirror of kTorchvisionUrl; empty: $RESNET_TORCHVISION_URL, else
  /// kTorchvisionUrl.
  std::string torchvision_url;
  /// The Hub token; empty: hf_token().
  std::string token;
  /// Tries per request, the first included.
  int tries = 3;
  /// The wait before the second try; doubled before each further one.
  std::chrono::milliseconds retry_delay{500};
  /// Seconds to wait for a connection.
  long connect_timeout_s = 10;
  /// A transfer slower than low_speed_bytes_per_s for this many seconds is
  /// abandoned and retried.
  long low_speed_time_s = 30;
  /// See low_speed_time_s.
  long low_speed_bytes_per_s = 1024;
  /// The progress line.
  Progress progress = Progress::automatic;
};

namespace detail {

/// The HTTP side of `options`.
inline HttpSettings http_settings(const DownloadOptions& options) {
  if (options.tries < 1) {
    throw std::invalid_argument(
        "resnet: DownloadOptions::tries is " + std::to_string(options.tries) +
        "; expected 1 or more");
  }
  HttpSettings settings;
  settings.tries = options.tries;
  settings.retry_delay = options.retry_delay;
  settings.connect_timeout_s = options.connect_timeout_s;
  settings.low_speed_time_s = options.low_speed_time_s;
  settings.low_speed_bytes_per_s = options.low_speed_bytes_per_s;
  settings.progress = options.progress == DownloadOptions::Progress::always ||
      (options.progress == DownloadOptions::Progress::automatic &&
       ::isatty(STDERR_FILENO) == 1);
  settings.user_agent = std::string("resnet/") + kVersion;
  return settings;
}

} // namespace detail

/// Downloads `url` to `destination` and returns `destination`; does nothing
/// when the file is already there. Checks options.sha256 when set. A
/// "<destination>.incomplete" left by an earlier try is resumed: give the
/// digest (or use a URL whose content never changes) so that a stale part
/// cannot go unnoticed. Throws std::runtime_error naming the URL when the
/// download or the check fails.
inline std::string download_file(
    const std::string& url,
    const std::string& destination,
    const DownloadOptions& options = {}) {
  if (detail::is_file(destination)) {
    return destination;
  }
  if (options.offline) {
    throw std::runtime_error(
        "resnet: " + destination + " is not there and downloads are off " +
        "(offline); fetch it from " + url + " with the network on");
  }
  if (!options.sha256.empty() &&
      (!detail::is_hex(options.sha256) || options.sha256.size() > 64)) {
    throw std::invalid_argument(
        "resnet: DownloadOptions::sha256 '" + options.sha256.substr(0, 80) +
        "' is not a SHA-256 in hex (or its first digits)");
  }
  detail::Expected expected;
  expected.sha256 = options.sha256;
  detail::download_checked(
      url,
      destination,
      destination + ".incomplete",
      destination + ".lock",
      expected,
      detail::http_settings(options));
  return destination;
}

/// The base URL torchvision's files are fetched from: options.torchvision_url,
/// else $RESNET_TORCHVISION_URL, else kTorchvisionUrl; no trailing '/'.
inline std::string torchvision_base_url(const DownloadOptions& options = {}) {
  std::string base = !options.torchvision_url.empty()
      ? options.torchvision_url
      : detail::env_value("RESNET_TORCHVISION_URL").value_or(kTorchvisionUrl);
  while (!base.empty() && base.back() == '/') {
    base.pop_back();
  }
  return base;
}

/// A torchvision weight file by name ("resnet50-11ad3fa6.pth") or URL: the
/// copy in torch.hub's checkpoints folder when there is one (used as is, as
/// torch.hub does), else downloaded there from torchvision_base_url() (a URL
/// under kTorchvisionUrl is fetched from the mirror when one is set) and
/// checked against the hash digits in its name. Returns the local path.
inline std::string fetch_torchvision(
    const std::string& file_or_url,
    const DownloadOptions& options = {}) {
  const std::string base = torchvision_base_url(options);
  std::string url;
  std::string file = file_or_url;
  if (file_or_url.find("://") != std::string::npos) {
    url = file_or_url;
    const std::string path = url.substr(0, url.find_first_of("?#"));
    file = path.substr(path.rfind('/') + 1);
    const std::string official = std::string(kTorchvisionUrl) + "/";
    if (url.rfind(official, 0) == 0) {
      url = base + "/" + url.substr(official.size());
    }
  } else {
    url = base + "/" + detail::url_quote(file, false);
  }
  if (!detail::is_cache_name(file)) {
    throw std::invalid_argument(
        "resnet: '" + file.substr(0, 200) + "' (from '" +
        file_or_url.substr(0, 200) + "') is not a weight file name; " +
        "expected a name such as 'resnet50-11ad3fa6.pth'");
  }
  const std::string folder = torch_checkpoints_folder(options.torch_home);
  const CacheLookup lookup = find_torch_hub_file(file, folder);
  if (lookup.found()) {
    return lookup.path;
  }
  if (options.offline) {
    throw std::runtime_error(
        "resnet: " + file + " is not in torch.hub's cache (searched " +
        lookup.searched_list() + ") and downloads are off (offline); " +
        "fetch it once with the network on, or copy it there");
  }
  DownloadOptions checked = options;
  if (checked.sha256.empty()) {
    // torch.hub's HASH_REGEX, searched as load_state_dict_from_url does.
    static const std::regex kHashInName("-([a-f0-9]*)\\.");
    std::smatch match;
    if (std::regex_search(file, match, kHashInName)) {
      checked.sha256 = match[1].str();
    }
  }
  return download_file(url, folder + "/" + file, checked);
}

/// `filename` of the model repository `repo_id` at `revision` (a branch, tag
/// or commit hash), as huggingface_hub's hf_hub_download fetches it: the
/// cached copy when the cache can answer (a commit hash it holds, or offline
/// mode), else asks `<endpoint>/<repo_id>/resolve/<revision>/<filename>` for
/// the commit (X-Repo-Commit) and the ETag (X-Linked-Etag for LFS files,
/// their SHA-256, which is checked; a small file's git blob id is checked
/// too), stores `blobs/<etag>`, the snapshot symlink and `refs/<revision>`.
/// When the Hub cannot be reached (or answers other than 404), a cached copy of
/// the revision is used. Returns the snapshot path.
inline std::string fetch_hub_file(
    const std::string& repo_id,
    const std::string& filename,
    const std::string& revision = "main",
    const DownloadOptions& options = {}) {
  detail::check_repo_filename(filename);
  detail::check_revision(revision);
  const std::string cache =
      options.hub_cache.empty() ? hf_hub_cache() : options.hub_cache;
  const std::string repo_folder = hf_repo_folder_name(repo_id);
  const std::string storage = cache + "/" + repo_folder;
  const std::string what =
      "'" + filename + "' of " + repo_id + " at revision '" + revision + "'";
  if (is_commit_hash(revision)) {
    const CacheLookup lookup =
        find_hf_hub_file(repo_id, filename, revision, cache);
    if (lookup.found()) {
      return lookup.path;
    }
  }
  if (options.offline || hf_hub_offline()) {
    const CacheLookup lookup =
        find_hf_hub_file(repo_id, filename, revision, cache);
    if (lookup.found()) {
      return lookup.path;
    }
    throw std::runtime_error(
        "resnet: " + what + " is not in the Hub's cache and downloads are " +
        "off (HF_HUB_OFFLINE or DownloadOptions::offline); searched " +
        lookup.searched_list() + "; fetch it once with the network on " +
        "(or with huggingface_hub into " + cache + ")");
  }

  std::string endpoint =
      options.endpoint.empty() ? hf_endpoint() : options.endpoint;
  while (!endpoint.empty() && endpoint.back() == '/') {
    endpoint.pop_back();
  }
  const std::string url = endpoint + "/" + repo_id + "/resolve/" +
      detail::url_quote(revision, false) + "/" +
      detail::url_quote(filename, true);
  detail::HttpSettings settings = detail::http_settings(options);
  settings.token = options.token.empty() ? hf_token() : options.token;
  settings.token_origin = detail::url_origin(endpoint);

  // The cached copy of the revision, when the Hub cannot say more.
  auto cached_or_throw = [&](const std::string& problem) -> std::string {
    const CacheLookup lookup =
        find_hf_hub_file(repo_id, filename, revision, cache);
    if (lookup.found()) {
      return lookup.path;
    }
    throw std::runtime_error(
        problem + "; and " + what + " is not in the Hub's cache (searched " +
        lookup.searched_list() + ")");
  };

  // HEAD, following redirects that stay on the Hub; a redirect elsewhere (a
  // CDN) carries the file's metadata and is where the bytes come from.
  detail::HttpResponse head;
  std::string at = url;
  std::string download_url = url;
  bool redirected = false;
  try {
    for (int hops = 0;; ++hops) {
      head = detail::http_head(at, settings);
      const std::string location = head.header("location");
      if (head.status < 300 || head.status >= 400 || location.empty()) {
        download_url = at;
        break;
      }
      const auto resolved = detail::url_resolve(at, location);
      if (!resolved) {
        throw detail::HttpError(
            "resnet: " + at + " redirects to '" + location.substr(0, 200) +
                "', which is not a URL",
            head.status);
      }
      const std::string target = *resolved;
      const std::string origin = detail::url_origin(target);
      if (origin != detail::url_origin(at) && origin != settings.token_origin &&
          origin != detail::url_origin(kDefaultHubEndpoint)) {
        download_url = target;
        redirected = true;
        break;
      }
      if (hops == 10) {
        throw detail::HttpError(
            "resnet: " + url + " redirects more than 10 times", head.status);
      }
      at = target;
    }
  } catch (const detail::HttpError& e) {
    return cached_or_throw(e.what());
  }
  if (head.status == 404) {
    const std::string message = head.header("x-error-message");
    throw detail::HttpError(
        "resnet: " + url + " was not found (HTTP 404" +
            (message.empty() ? "" : ": " + message.substr(0, 200)) + "): no " +
            what + "; check the repository, file name and revision",
        404);
  }
  if (head.status >= 400) {
    std::string advice = "; try again later";
    if (head.status == 401 || head.status == 403) {
      advice = settings.token.empty()
          ? "; the repository may be private or gated: set HF_TOKEN (or " +
              std::string("log in with huggingface_hub) to a token with access")
          : "; the token (HF_TOKEN or the token file) has no access to it";
    }
    return cached_or_throw(
        "resnet: " + url + " answered HTTP " + std::to_string(head.status) +
        advice);
  }

  const std::string commit = head.header("x-repo-commit");
  std::string etag = head.header("x-linked-etag");
  if (etag.empty()) {
    etag = head.header("etag");
  }
  if (etag.rfind("W/", 0) == 0) {
    etag = etag.substr(2);
  }
  while (!etag.empty() && etag.front() == '"') {
    etag.erase(0, 1);
  }
  while (!etag.empty() && etag.back() == '"') {
    etag.pop_back();
  }
  if (!detail::is_cache_name(commit) || !detail::is_cache_name(etag)) {
    return cached_or_throw(
        "resnet: " + url + " answered without a usable X-Repo-Commit ('" +
        commit.substr(0, 80) + "') or ETag ('" + etag.substr(0, 80) +
        "'): it does not look like a Hugging Face Hub; check HF_ENDPOINT " +
        "and the proxy settings");
  }
  detail::Expected expected;
  std::string size_text = head.header("x-linked-size");
  if (size_text.empty() && !redirected) {
    size_text = head.header("content-length");
  }
  if (!size_text.empty() &&
      size_text.find_first_not_of("0123456789") == std::string::npos &&
      size_text.size() < 20) {
    expected.size = std::stoull(size_text);
  }
  if (etag.size() == 64 && detail::is_hex(etag)) {
    expected.sha256 = etag; // an LFS file: its ETag is its SHA-256
  } else if (etag.size() == 40 && detail::is_hex(etag)) {
    expected.git_sha1 = etag; // a file in git: its ETag is its blob id
  }

  const std::string blob = storage + "/blobs/" + etag;
  const std::string pointer = storage + "/snapshots/" + commit + "/" + filename;
  if (!detail::is_file(pointer)) {
    detail::download_checked(
        download_url,
        blob,
        blob + ".incomplete",
        cache + "/.locks/" + repo_folder + "/" + etag + ".lock",
        expected,
        settings);
    detail::make_folders(detail::fs::path(pointer).parent_path());
    std::string up = "../../";
    for (char c : filename) {
      up += c == '/' ? "../" : "";
    }
    detail::replace_symlink(up + "blobs/" + etag, pointer);
  }
  if (revision != commit) {
    const std::string ref = storage + "/refs/" + revision;
    if (detail::read_text(ref).value_or("") != commit) {
      detail::make_folders(detail::fs::path(ref).parent_path());
      detail::write_text_atomically(ref, commit);
    }
  }
  return pointer;
}

} // namespace resnet::hub
