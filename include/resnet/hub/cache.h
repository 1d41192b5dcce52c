#pragma once

// Where published weights live on disk: the caches of torch.hub and of
// huggingface_hub, laid out exactly as those Python packages lay them out, so
// that a file either side fetched is found by the other.
//
//   torch.hub        $TORCH_HOME/hub/checkpoints/<file>
//                    TORCH_HOME defaults to $XDG_CACHE_HOME/torch, else
//                    ~/.cache/torch.
//   huggingface_hub  <cache>/models--<org>--<name>/
//                      blobs/<etag>                 the bytes
//                      snapshots/<commit>/<file>    -> ../../blobs/<etag>
//                      refs/<revision>              the commit's hash
//                    <cache> is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE,
//                    else $HF_HOME/hub; HF_HOME defaults to
//                    $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
//
// Nothing here touches the network. A variable set to the empty string counts
// as unset.

#include <resnet/hub/detail/env.h>
#include <resnet/hub/detail/files.h>
#include <resnet/hub/detail/names.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace resnet::hub {

/// The address of the Hugging Face Hub unless HF_ENDPOINT says otherwise.
inline constexpr const char* kDefaultHubEndpoint = "https://huggingface.co";

/// torch.hub's home folder: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else
/// ~/.cache/torch ("~" expanded as Python's os.path.expanduser does).
inline std::string torch_home() {
  using detail::env_value;
  if (auto home = env_value("TORCH_HOME")) {
    return detail::expand_user(*home);
  }
  const std::string cache =
      env_value("XDG_CACHE_HOME").value_or(std::string("~/.cache"));
  return detail::expand_user(cache + "/torch");
}

/// Where torch.hub keeps downloaded weights: `<home>/hub/checkpoints`, with
/// torch_home() when `home` is empty.
inline std::string torch_checkpoints_folder(const std::string& home = "") {
  return (home.empty() ? torch_home() : home) + "/hub/checkpoints";
}

/// huggingface_hub's home: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else
/// ~/.cache/huggingface ("~" and $VARIABLES expanded).
inline std::string hf_home() {
  using detail::env_value;
  const std::string home = env_value("HF_HOME").value_or(
      env_value("XDG_CACHE_HOME").value_or(detail::home_folder() + "/.cache") +
      "/huggingface");
  return detail::expand_vars(detail::expand_user(home));
}

/// huggingface_hub's cache of repositories: $HF_HUB_CACHE, else the legacy
/// $HUGGINGFACE_HUB_CACHE, else hf_home()/hub.
inline std::string hf_hub_cache() {
  using detail::env_value;
  const std::string cache =
      env_value("HF_HUB_CACHE")
          .value_or(
              env_value("HUGGINGFACE_HUB_CACHE").value_or(hf_home() + "/hub"));
  return detail::expand_vars(detail::expand_user(cache));
}

/// The Hub's address: $HF_ENDPOINT without trailing slashes, else
/// kDefaultHubEndpoint.
inline std::string hf_endpoint() {
  std::string endpoint =
      detail::env_value("HF_ENDPOINT").value_or(kDefaultHubEndpoint);
  while (!endpoint.empty() && endpoint.back() == '/') {
    endpoint.pop_back();
  }
  return endpoint;
}

/// Whether huggingface_hub's offline mode is on: HF_HUB_OFFLINE (else
/// TRANSFORMERS_OFFLINE) is 1, ON, YES or TRUE in any case.
inline bool hf_hub_offline() {
  auto value = detail::env_value("HF_HUB_OFFLINE");
  return detail::is_truthy(
      value ? value : detail::env_value("TRANSFORMERS_OFFLINE"));
}

/// The Hub token huggingface_hub would send: $HF_TOKEN (else the legacy
/// $HUGGING_FACE_HUB_TOKEN), else the text of the token file ($HF_TOKEN_PATH,
/// default hf_home()/token); line breaks and surrounding blanks removed.
/// "" when there is none.
inline std::string hf_token() {
  using detail::env_value;
  auto from_env = env_value("HF_TOKEN");
  if (!from_env) {
    from_env = env_value("HUGGING_FACE_HUB_TOKEN");
  }
  if (from_env) {
    const std::string token = detail::clean_token(*from_env);
    if (!token.empty()) {
      return token;
    }
  }
  const std::string path = detail::expand_vars(detail::expand_user(
      env_value("HF_TOKEN_PATH").value_or(hf_home() + "/token")));
  return detail::clean_token(detail::read_text(path).value_or(""));
}

/// Whether `revision` is a full commit hash (40 lower-case hex digits), which
/// the cache can answer for without refs/.
inline bool is_commit_hash(const std::string& revision) {
  if (revision.size() != 40) {
    return false;
  }
  for (char c : revision) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

/// The folder of a model repository in the Hub's cache:
/// "models--<org>--<name>" for "org/name".
inline std::string hf_repo_folder_name(const std::string& repo_id) {
  detail::check_repo_id(repo_id);
  std::string name = "models--" + repo_id;
  const auto slash = name.find('/');
  if (slash != std::string::npos) {
    name.replace(slash, 1, "--");
  }
  return name;
}

/// A file looked for in a cache, without the network.
struct CacheLookup {
  /// The file found; empty when it is not there.
  std::string path;
  /// Every path looked at, in order, for error messages.
  std::vector<std::string> searched;
  /// Whether the file was found.
  bool found() const {
    return !path.empty();
  }
  /// The searched paths as one line, "a, b, c".
  std::string searched_list() const {
    std::string out;
    for (const auto& entry : searched) {
      out += (out.empty() ? "" : ", ") + entry;
    }
    return out;
  }
};

/// Looks for `file_name` in torch.hub's checkpoints folder (`folder`, or
/// torch_checkpoints_folder() when empty), as torch.hub does: the file is
/// used when it exists.
inline CacheLookup find_torch_hub_file(
    const std::string& file_name,
    const std::string& folder = "") {
  CacheLookup lookup;
  const std::string path =
      (folder.empty() ? torch_checkpoints_folder() : folder) + "/" + file_name;
  lookup.searched.push_back(path);
  if (detail::is_file(path)) {
    lookup.path = path;
  }
  return lookup;
}

/// Looks for `filename` of the model repository `repo_id` at `revision` in
/// the Hub's cache (`cache`, or hf_hub_cache() when empty), as
/// huggingface_hub's try_to_load_from_cache does: a commit hash names its
/// snapshot; a branch or tag is read from `refs/<revision>` first.
inline CacheLookup find_hf_hub_file(
    const std::string& repo_id,
    const std::string& filename,
    const std::string& revision = "main",
    const std::string& cache = "") {
  detail::check_repo_filename(filename);
  detail::check_revision(revision);
  const std::string storage = (cache.empty() ? hf_hub_cache() : cache) + "/" +
      hf_repo_folder_name(repo_id);
  CacheLookup lookup;
  std::string commit = revision;
  if (!is_commit_hash(revision)) {
    const std::string ref = storage + "/refs/" + revision;
    lookup.searched.push_back(ref);
    auto text = detail::read_text(ref);
    if (!text || text->empty() || !detail::is_plain_relative_path(*text)) {
      return lookup;
    }
    commit = *text;
  }
  const std::string path = storage + "/snapshots/" + commit + "/" + filename;
  lookup.searched.push_back(path);
  if (detail::is_file(path)) {
    lookup.path = path;
  }
  return lookup;
}

} // namespace resnet::hub
