// The caches shared with torch.hub and huggingface_hub, downloads from
// stand-ins for the Hub and download.pytorch.org on 127.0.0.1
// (tests/python/standin_servers.py, one per test, started and killed here),
// and published networks by name (resnet::hub::pretrained) against timm's
// and torchvision's own outputs.
// Every test has its own cache folders, given through the environment
// variables Python reads too.

#include <resnet/hub/cache.h>
#include <resnet/hub/download.h>
#include <resnet/hub/pretrained.h>
#include <resnet/io/state_dict.h>

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using resnet::hub::DownloadOptions;

// What the library and Python read; each test starts with none of them set.
const char* const kVariables[] = {
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "RESNET_TORCHVISION_URL",
    "RESNET_TEST_EXPAND"};

const char* const kRepo = "standin/resnet18";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string sha256(const fs::path& path) {
  return resnet::hub::detail::sha256_of_file(path.string());
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// GET without the library, for the stand-in's own endpoints.
std::string plain_get(const std::string& url) {
  CURL* curl = curl_easy_init();
  std::string body;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_PROXY, "");
  const CURLcode code = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  if (code != CURLE_OK) {
    throw std::runtime_error("GET " + url + ": " + curl_easy_strerror(code));
  }
  return body;
}

// The stand-in servers, with the misbehaviour `flags` asks for.
class StandIn {
 public:
  explicit StandIn(const std::string& flags) {
    const std::string command = "exec '" RESNET_PYTHON "' '" RESNET_SOURCE_DIR
                                "/tests/python/standin_servers.py' " +
        flags;
    pipe_ = popen(command.c_str(), "r");
    char line[256] = {};
    if (pipe_ == nullptr || std::fgets(line, sizeof line, pipe_) == nullptr ||
        std::sscanf(
            line, "PORTS %d %d PID %d", &hub_port_, &cdn_port_, &pid_) != 3) {
      throw std::runtime_error(
          "the stand-in servers did not start: " + command);
    }
  }
  ~StandIn() {
    ::kill(pid_, SIGTERM);
    pclose(pipe_);
  }
  StandIn(const StandIn&) = delete;
  StandIn& operator=(const StandIn&) = delete;

  std::string hub() const {
    return "http://127.0.0.1:" + std::to_string(hub_port_);
  }
  std::string cdn() const {
    return "http://127.0.0.1:" + std::to_string(cdn_port_);
  }
  json files() const {
    return json::parse(plain_get(hub() + "/_files"));
  }
  json requests() const {
    return json::parse(plain_get(hub() + "/_stats"))["requests"];
  }
  // Requests with `method` (or any, when empty) whose path contains `part`.
  std::vector<json> seen(const std::string& method, const std::string& part)
      const {
    std::vector<json> out;
    for (const auto& request : requests()) {
      if ((method.empty() || request["method"] == method) &&
          request["path"].get<std::string>().find(part) != std::string::npos) {
        out.push_back(request);
      }
    }
    return out;
  }

 private:
  FILE* pipe_ = nullptr;
  int hub_port_ = 0;
  int cdn_port_ = 0;
  int pid_ = 0;
};

struct PythonRun {
  int status;
  std::string output;
};

// Runs `code` with the Python that has torch and huggingface_hub, in this
// process's environment.
PythonRun run_python(const fs::path& folder, const std::string& code) {
  const fs::path script = folder / "check.py";
  write_file(script, code);
  const std::string command =
      "exec '" RESNET_PYTHON "' '" + script.string() + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  size_t got = 0;
  while (pipe && (got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
    output.append(buffer, got);
  }
  const int status = pipe ? pclose(pipe) : -1;
  return {status, output};
}

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kVariables) {
      unsetenv(name);
    }
    // Requests to the stand-ins never go through a proxy of the machine's.
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::path(RESNET_TEST_WORK_DIR) /
        (std::string(info->test_suite_name()) + "." + info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    setenv("TORCH_HOME", (root_ / "torch").c_str(), 1);
    setenv("HF_HOME", (root_ / "hf").c_str(), 1);
  }
  void TearDown() override {
    server_.reset();
    for (const char* name : kVariables) {
      unsetenv(name);
    }
  }

  // Starts the stand-ins and points HF_ENDPOINT and RESNET_TORCHVISION_URL
  // at them.
  StandIn& serve(const std::string& flags = "") {
    server_.reset();
    server_.emplace(flags);
    setenv("HF_ENDPOINT", server_->hub().c_str(), 1);
    setenv("RESNET_TORCHVISION_URL", (server_->hub() + "/models").c_str(), 1);
    files_ = server_->files();
    return *server_;
  }

  // Short delays, no progress line.
  static DownloadOptions quick() {
    DownloadOptions options;
    options.retry_delay = std::chrono::milliseconds(20);
    options.connect_timeout_s = 5;
    options.progress = DownloadOptions::Progress::never;
    return options;
  }

  std::string model_name() const {
    return files_["models"].begin().key();
  }
  json hub_file(const std::string& name) const {
    return files_["hub"][std::string(kRepo) + "/" + name];
  }
  std::string commit() const {
    return files_["commit"];
  }
  fs::path checkpoints() const {
    return root_ / "torch" / "hub" / "checkpoints";
  }
  fs::path storage() const {
    return root_ / "hf" / "hub" / "models--standin--resnet18";
  }
  // Everything under `folder`, as relative paths.
  static std::vector<std::string> listing(const fs::path& folder) {
    std::vector<std::string> out;
    if (fs::exists(folder)) {
      for (const auto& entry : fs::recursive_directory_iterator(folder)) {
        out.push_back(fs::relative(entry.path(), folder).string());
      }
    }
    return out;
  }

  fs::path root_;
  std::optional<StandIn> server_;
  json files_;
};

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// ---------------------------------------------------------------- caches

// The folders and settings under many environments, against what torch.hub
// and huggingface_hub themselves compute under the same ones.
TEST_F(HubTest, CachePathsAgreeWithPython) {
  const std::string r = root_.string();
  const char* home = std::getenv("HOME");
  const std::string saved_home = home ? home : "";
  setenv("HOME", (root_ / "home").c_str(), 1);
  write_file(
      root_ / "home" / ".cache" / "huggingface" / "token", " from-file\n");
  write_file(root_ / "tokens" / "t", "from-token-path\r\n");
  const std::vector<json> cases = {
      json::object(),
      {{"XDG_CACHE_HOME", r + "/xdg"}},
      {{"TORCH_HOME", "~/th"}, {"HF_HOME", "~/hfh"}},
      {{"RESNET_TEST_EXPAND", r + "/exp"},
       {"HF_HOME", "$RESNET_TEST_EXPAND/a"},
       {"HF_HUB_CACHE", "${RESNET_TEST_EXPAND}/b/$UNSET_NAME_XYZ"}},
      {{"HF_HOME", r + "/h"}, {"HUGGINGFACE_HUB_CACHE", r + "/legacy"}},
      {{"HUGGINGFACE_HUB_CACHE", r + "/legacy"}, {"HF_HUB_CACHE", r + "/new"}},
      {{"HF_HUB_OFFLINE", "yes"},
       {"HF_ENDPOINT", "http://mirror.example:8080//"},
       {"HF_TOKEN", " hf_env \n"}},
      {{"HF_HUB_OFFLINE", "0"}, {"TRANSFORMERS_OFFLINE", "1"}},
      {{"TRANSFORMERS_OFFLINE", "True"}, {"HUGGING_FACE_HUB_TOKEN", "legacy"}},
      {{"HF_TOKEN_PATH", r + "/tokens/t"}}};
  const std::vector<std::string> names = {
      "XDG_CACHE_HOME",
      "TORCH_HOME",
      "HF_HOME",
      "HF_HUB_CACHE",
      "HUGGINGFACE_HUB_CACHE",
      "HF_HUB_OFFLINE",
      "TRANSFORMERS_OFFLINE",
      "HF_ENDPOINT",
      "HF_TOKEN",
      "HUGGING_FACE_HUB_TOKEN",
      "HF_TOKEN_PATH",
      "RESNET_TEST_EXPAND"};
  json expected = json::array();
  for (const auto& variables : cases) {
    for (const auto& name : names) {
      if (variables.contains(name)) {
        setenv(name.c_str(), variables[name].get<std::string>().c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
    expected.push_back(
        {{"torch_hub", resnet::hub::torch_home() + "/hub"},
         {"hf_home", resnet::hub::hf_home()},
         {"hf_hub_cache", resnet::hub::hf_hub_cache()},
         {"endpoint", resnet::hub::hf_endpoint()},
         {"offline", resnet::hub::hf_hub_offline()},
         {"token", resnet::hub::hf_token()}});
  }
  write_file(root_ / "cases.json", json(cases).dump());
  write_file(root_ / "names.json", json(names).dump());
  const PythonRun run = run_python(root_, R"(
import json, os, subprocess, sys
root = os.path.dirname(os.path.abspath(__file__))
cases = json.load(open(os.path.join(root, "cases.json")))
names = json.load(open(os.path.join(root, "names.json")))
import torch.hub
# huggingface_hub reads its variables at import: one interpreter per case.
HF = """
import json, huggingface_hub
from huggingface_hub import constants
get_token = getattr(huggingface_hub, "get_token", None) or huggingface_hub.HfFolder.get_token
print(json.dumps({
    "hf_home": constants.HF_HOME,
    "hf_hub_cache": constants.HF_HUB_CACHE,
    "endpoint": constants.ENDPOINT,
    "offline": bool(constants.HF_HUB_OFFLINE),
    "token": get_token() or "",
}))
"""
out = []
for case in cases:
    for name in names:
        if name in case:
            os.environ[name] = case[name]
        else:
            os.environ.pop(name, None)
    hf = subprocess.run([sys.executable, "-c", HF], check=True, capture_output=True, text=True)
    result = json.loads(hf.stdout)
    result["torch_hub"] = torch.hub.get_dir()
    out.append(result)
print("RESULT " + json.dumps(out))
)");
  if (home) {
    setenv("HOME", saved_home.c_str(), 1);
  } else {
    unsetenv("HOME");
  }
  ASSERT_EQ(run.status, 0) << run.output;
  const auto at = run.output.find("RESULT ");
  ASSERT_NE(at, std::string::npos) << run.output;
  const json python = json::parse(run.output.substr(at + 7));
  ASSERT_EQ(python.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(expected[i], python[i]) << "environment " << cases[i].dump();
  }
}

// Lookups read the layout alone: refs/<revision>, then the snapshot.
TEST_F(HubTest, CacheLookupsUseRefsAndSnapshots) {
  const std::string cache = (root_ / "hf" / "hub").string();
  const std::string commit(40, 'a');
  auto missing = resnet::hub::find_hf_hub_file(kRepo, "model.safetensors");
  EXPECT_FALSE(missing.found());
  ASSERT_EQ(missing.searched.size(), 1u);
  EXPECT_EQ(
      missing.searched[0], cache + "/models--standin--resnet18/refs/main");

  write_file(storage() / "refs" / "main", commit);
  write_file(storage() / "blobs" / "e1", "bytes");
  fs::create_directories(storage() / "snapshots" / commit / "sub");
  fs::create_symlink(
      "../../../blobs/e1", storage() / "snapshots" / commit / "sub" / "w.bin");
  auto found = resnet::hub::find_hf_hub_file(kRepo, "sub/w.bin");
  ASSERT_TRUE(found.found()) << found.searched_list();
  EXPECT_EQ(read_file(found.path), "bytes");
  EXPECT_EQ(
      found.path,
      resnet::hub::find_hf_hub_file(kRepo, "sub/w.bin", commit).path);
  auto other = resnet::hub::find_hf_hub_file(kRepo, "w.bin", "main", cache);
  EXPECT_FALSE(other.found());
  EXPECT_EQ(
      other.searched.back(),
      cache + "/models--standin--resnet18/snapshots/" + commit + "/w.bin");

  EXPECT_FALSE(
      resnet::hub::find_torch_hub_file("resnet18-f37072fd.pth").found());
  write_file(checkpoints() / "resnet18-f37072fd.pth", "x");
  EXPECT_EQ(
      resnet::hub::find_torch_hub_file("resnet18-f37072fd.pth").path,
      (checkpoints() / "resnet18-f37072fd.pth").string());
}

TEST_F(HubTest, NamesThatLeaveTheCacheAreRefused) {
  for (const char* repo : {"a/b/c", "../x", "a/..", "", "a--b/c", "a/b c"}) {
    EXPECT_THROW(resnet::hub::hf_repo_folder_name(repo), std::invalid_argument)
        << repo;
  }
  for (const char* file : {"../x", "/etc/passwd", "a//b", "a/./b", "a/"}) {
    EXPECT_THROW(
        resnet::hub::find_hf_hub_file(kRepo, file), std::invalid_argument)
        << file;
  }
  EXPECT_THROW(
      resnet::hub::find_hf_hub_file(kRepo, "x", "../main"),
      std::invalid_argument);
  EXPECT_THROW(
      resnet::hub::fetch_torchvision("../x.pth", quick()),
      std::invalid_argument);
  EXPECT_EQ(resnet::hub::hf_repo_folder_name("org/name"), "models--org--name");
  EXPECT_EQ(resnet::hub::hf_repo_folder_name("gpt2"), "models--gpt2");
}

// ---------------------------------------------------------- torchvision

TEST_F(HubTest, TorchvisionFileIsDownloadedCheckedAndReused) {
  StandIn& server = serve();
  const std::string name = model_name();
  // A URL under download.pytorch.org goes to the mirror.
  const std::string path = resnet::hub::fetch_torchvision(
      std::string(resnet::hub::kTorchvisionUrl) + "/" + name, quick());
  EXPECT_EQ(path, (checkpoints() / name).string());
  EXPECT_EQ(sha256(path), files_["models"][name]["sha256"]);
  EXPECT_EQ(fs::file_size(path), files_["models"][name]["size"].get<size_t>());
  EXPECT_FALSE(fs::exists(path + ".incomplete"));
  EXPECT_EQ(server.seen("GET", "/models/" + name).size(), 1u);

  const size_t before = server.requests().size();
  EXPECT_EQ(resnet::hub::fetch_torchvision(name, quick()), path);
  EXPECT_EQ(server.requests().size(), before);
}

TEST_F(HubTest, TorchvisionDownloadResumesAfterACut) {
  StandIn& server = serve("--cut");
  const std::string name = model_name();
  const std::string path = resnet::hub::fetch_torchvision(name, quick());
  EXPECT_EQ(sha256(path), files_["models"][name]["sha256"]);
  const auto gets = server.seen("GET", "/models/" + name);
  ASSERT_EQ(gets.size(), 2u);
  EXPECT_TRUE(gets[0]["range"].is_null());
  const size_t half = files_["models"][name]["size"].get<size_t>() / 2;
  EXPECT_EQ(gets[1]["range"], "bytes=" + std::to_string(half) + "-");
}

TEST_F(HubTest, TorchvisionDownloadStartsOverWhenRangeIsIgnored) {
  StandIn& server = serve("--cut --no-range");
  const std::string name = model_name();
  const std::string path = resnet::hub::fetch_torchvision(name, quick());
  EXPECT_EQ(sha256(path), files_["models"][name]["sha256"]);
  EXPECT_EQ(fs::file_size(path), files_["models"][name]["size"].get<size_t>());
  const auto gets = server.seen("GET", "/models/" + name);
  ASSERT_EQ(gets.size(), 2u);
  EXPECT_FALSE(gets[1]["range"].is_null());
}

TEST_F(HubTest, CorruptTorchvisionFileIsRefusedAndNotKept) {
  serve("--corrupt");
  const std::string name = model_name();
  const std::string message =
      error_of([&] { resnet::hub::fetch_torchvision(name, quick()); });
  EXPECT_EQ(message.rfind("resnet: ", 0), 0u) << message;
  EXPECT_CONTAINS(message, "SHA-256");
  EXPECT_CONTAINS(message, "/models/" + name);
  for (const auto& entry : listing(checkpoints())) {
    EXPECT_EQ(entry.find(name), entry.find(name + ".lock")) << entry;
  }
  EXPECT_FALSE(fs::exists(checkpoints() / name));
  EXPECT_FALSE(fs::exists(checkpoints() / (name + ".incomplete")));
}

TEST_F(HubTest, MissingTorchvisionFileIsNamedAndNotRetried) {
  StandIn& server = serve();
  const std::string message = error_of([&] {
    resnet::hub::fetch_torchvision("resnet99-0123abcd.pth", quick());
  });
  EXPECT_CONTAINS(message, server.hub() + "/models/resnet99-0123abcd.pth");
  EXPECT_CONTAINS(message, "404");
  EXPECT_EQ(server.seen("", "resnet99").size(), 1u);
  EXPECT_FALSE(fs::exists(checkpoints() / "resnet99-0123abcd.pth.incomplete"));
}

TEST_F(HubTest, ServerErrorsAreRetriedABoundedNumberOfTimes) {
  StandIn& server = serve("--fail 2");
  const std::string name = model_name();
  DownloadOptions options = quick();
  options.tries = 2;
  const std::string message =
      error_of([&] { resnet::hub::fetch_torchvision(name, options); });
  EXPECT_CONTAINS(message, "503");
  EXPECT_EQ(server.seen("GET", name).size(), 2u);
  options.tries = 3;
  const std::string path = resnet::hub::fetch_torchvision(name, options);
  EXPECT_EQ(sha256(path), files_["models"][name]["sha256"]);
  EXPECT_EQ(server.seen("GET", name).size(), 3u);
}

TEST_F(HubTest, UnreachableServerIsReportedAfterRetries) {
  const std::string url = "http://127.0.0.1:1/models/x-0123abcd.pth";
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of([&] {
    resnet::hub::download_file(url, (root_ / "x.pth").string(), quick());
  });
  EXPECT_CONTAINS(message, url);
  EXPECT_CONTAINS(message, "3 tries");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(fs::exists(root_ / "x.pth"));
}

TEST_F(HubTest, DownloadFileChecksTheGivenDigest) {
  StandIn& server = serve();
  const std::string name = model_name();
  const std::string digest = files_["models"][name]["sha256"];
  DownloadOptions options = quick();
  options.sha256 =
      std::string(64 - digest.size(), '0') + "f" + digest.substr(1);
  const fs::path destination = root_ / "plain" / "file.bin";
  const std::string url = server.hub() + "/models/" + name;
  EXPECT_CONTAINS(
      error_of([&] {
        resnet::hub::download_file(url, destination.string(), options);
      }),
      "SHA-256");
  EXPECT_FALSE(fs::exists(destination));
  options.sha256 = digest;
  EXPECT_EQ(
      resnet::hub::download_file(url, destination.string(), options),
      destination.string());
  EXPECT_EQ(sha256(destination), digest);
}

// A file torch.hub put in its cache is used as it is, without a request.
TEST_F(HubTest, TorchHubCacheFileIsUsedAsIs) {
  StandIn& server = serve();
  const std::string name = model_name();
  const PythonRun run = run_python(root_, R"(
import os, torch.hub
name = ")" + name + R"("
folder = os.path.join(torch.hub.get_dir(), "checkpoints")
os.makedirs(folder, exist_ok=True)
torch.hub.download_url_to_file(os.environ["RESNET_TORCHVISION_URL"] + "/" + name,
                               os.path.join(folder, name), hash_prefix=name.split("-")[1].split(".")[0],
                               progress=False)
)");
  ASSERT_EQ(run.status, 0) << run.output;
  const size_t before = server.requests().size();
  EXPECT_EQ(before, 1u);
  EXPECT_EQ(
      resnet::hub::fetch_torchvision(name, quick()),
      (checkpoints() / name).string());
  EXPECT_EQ(server.requests().size(), before);
}

// --------------------------------------------------------------- the Hub

TEST_F(HubTest, HubFilesAreStoredAsHuggingfaceHubStoresThem) {
  StandIn& server = serve();
  const std::string commit_hash = commit();
  for (const std::string name :
       {"model.safetensors", "config.json", "weights/extra.bin"}) {
    const json info = hub_file(name);
    const std::string path =
        resnet::hub::fetch_hub_file(kRepo, name, "main", quick());
    EXPECT_EQ(path, (storage() / "snapshots" / commit_hash / name).string());
    EXPECT_EQ(sha256(path), info["sha256"]) << name;
    const std::string etag = info["lfs"] ? info["sha256"] : info["git_sha1"];
    const std::string up =
        name.find('/') == std::string::npos ? "../../" : "../../../";
    EXPECT_EQ(fs::read_symlink(path).string(), up + "blobs/" + etag);
    EXPECT_TRUE(fs::is_regular_file(storage() / "blobs" / etag));
  }
  EXPECT_EQ(read_file(storage() / "refs" / "main"), commit_hash);
  for (const auto& entry : listing(storage() / "blobs")) {
    EXPECT_EQ(entry.find(".incomplete"), std::string::npos) << entry;
  }
  // The bytes of an LFS file come from the CDN.
  EXPECT_EQ(
      server
          .seen(
              "GET",
              "/cdn/" +
                  hub_file("model.safetensors")["sha256"].get<std::string>())
          .size(),
      1u);
  // Again: one HEAD each, no GET.
  const size_t gets = server.seen("GET", "").size();
  resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  EXPECT_EQ(server.seen("GET", "").size(), gets);
}

// A renamed repository answers with a redirect on the Hub itself, which is
// followed (with the token); the file is kept under the name asked for, as
// huggingface_hub keeps it.
TEST_F(HubTest, RedirectOnTheHubIsFollowed) {
  StandIn& server = serve("--token s3cret");
  setenv("HF_TOKEN", "s3cret", 1);
  for (const std::string name : {"config.json", "model.safetensors"}) {
    const std::string path =
        resnet::hub::fetch_hub_file("standin/old-name", name, "main", quick());
    EXPECT_EQ(
        path,
        (root_ / "hf" / "hub" / "models--standin--old-name" / "snapshots" /
         commit() / name)
            .string());
    EXPECT_EQ(sha256(path), hub_file(name)["sha256"]);
  }
  EXPECT_EQ(server.seen("HEAD", "/standin/resnet18/resolve/").size(), 2u);
  EXPECT_EQ(
      server.seen("GET", "/standin/resnet18/resolve/config.json").size(), 0u);
  EXPECT_EQ(
      server.seen("GET", "/standin/resnet18/resolve/main/config.json").size(),
      1u);
}

TEST_F(HubTest, HubDownloadResumesAfterACut) {
  StandIn& server = serve("--cut");
  const std::string sha = hub_file("model.safetensors")["sha256"];
  const std::string path =
      resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  EXPECT_EQ(sha256(path), sha);
  const auto gets = server.seen("GET", "/cdn/" + sha);
  ASSERT_EQ(gets.size(), 2u);
  const size_t half = hub_file("model.safetensors")["size"].get<size_t>() / 2;
  EXPECT_EQ(gets[1]["range"], "bytes=" + std::to_string(half) + "-");
}

TEST_F(HubTest, CorruptHubFileLeavesNothingInTheCache) {
  serve("--corrupt");
  for (const std::string name : {"model.safetensors", "config.json"}) {
    const std::string message = error_of(
        [&] { resnet::hub::fetch_hub_file(kRepo, name, "main", quick()); });
    EXPECT_EQ(message.rfind("resnet: ", 0), 0u) << message;
    EXPECT_CONTAINS(message, name == "config.json" ? "git blob id" : "SHA-256");
  }
  EXPECT_TRUE(listing(storage() / "blobs").empty());
  EXPECT_TRUE(listing(storage() / "snapshots").empty());
  EXPECT_FALSE(fs::exists(storage() / "refs" / "main"));
}

TEST_F(HubTest, MissingHubFileIsNamedAndNotRetried) {
  StandIn& server = serve();
  const std::string message = error_of([&] {
    resnet::hub::fetch_hub_file(kRepo, "nothing.bin", "main", quick());
  });
  EXPECT_CONTAINS(
      message, server.hub() + "/standin/resnet18/resolve/main/nothing.bin");
  EXPECT_CONTAINS(message, "404");
  EXPECT_EQ(server.seen("", "nothing.bin").size(), 1u);
  EXPECT_CONTAINS(
      error_of([&] {
        resnet::hub::fetch_hub_file(kRepo, "config.json", "v9", quick());
      }),
      "404");
}

TEST_F(HubTest, OfflineModeUsesTheCacheWithoutRequests) {
  StandIn& server = serve();
  const std::string path =
      resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  const size_t before = server.requests().size();
  setenv("HF_HUB_OFFLINE", "1", 1);
  EXPECT_EQ(
      resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick()),
      path);
  EXPECT_EQ(
      resnet::hub::fetch_hub_file(
          kRepo, "model.safetensors", commit(), quick()),
      path);
  unsetenv("HF_HUB_OFFLINE");
  // A commit hash the cache holds needs no request either.
  EXPECT_EQ(
      resnet::hub::fetch_hub_file(
          kRepo, "model.safetensors", commit(), quick()),
      path);
  EXPECT_EQ(server.requests().size(), before);
}

TEST_F(HubTest, OfflineModeNamesTheFileAndTheFoldersSearched) {
  StandIn& server = serve();
  setenv("HF_HUB_OFFLINE", "true", 1);
  const std::string message = error_of([&] {
    resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  });
  EXPECT_CONTAINS(message, "'model.safetensors' of standin/resnet18");
  EXPECT_CONTAINS(message, "HF_HUB_OFFLINE");
  EXPECT_CONTAINS(message, (storage() / "refs" / "main").string());
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(HubTest, UnreachableHubFallsBackToTheCache) {
  serve();
  const std::string path =
      resnet::hub::fetch_hub_file(kRepo, "config.json", "main", quick());
  server_.reset();
  setenv("HF_ENDPOINT", "http://127.0.0.1:1", 1);
  EXPECT_EQ(
      resnet::hub::fetch_hub_file(kRepo, "config.json", "main", quick()), path);
  const std::string message = error_of([&] {
    resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  });
  EXPECT_CONTAINS(
      message,
      "http://127.0.0.1:1/standin/resnet18/resolve/main/model.safetensors");
  EXPECT_CONTAINS(message, "not in the Hub's cache");
}

// Two processes that want one file at once: the second waits on the lock
// and finds the file; the server sends it once.
TEST_F(HubTest, TwoProcessesDownloadAFileOnce) {
  StandIn& server = serve("--slow 0.6");
  const std::string sha = hub_file("model.safetensors")["sha256"];
  std::fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int code = 1;
    try {
      const std::string path = resnet::hub::fetch_hub_file(
          kRepo, "model.safetensors", "main", quick());
      code = sha256(path) == sha ? 0 : 2;
    } catch (...) {
      code = 3;
    }
    _exit(code);
  }
  const std::string path =
      resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(sha256(path), sha);
  EXPECT_EQ(server.seen("HEAD", "model.safetensors").size(), 2u);
  EXPECT_EQ(server.seen("GET", "/cdn/" + sha).size(), 1u);
}

TEST_F(HubTest, PythonFindsWhatWeDownloaded) {
  serve();
  const std::string weights =
      resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  const std::string config =
      resnet::hub::fetch_hub_file(kRepo, "weights/extra.bin", "main", quick());
  const PythonRun run = run_python(root_, R"(
import os
from huggingface_hub import hf_hub_download
cache = os.path.join(os.environ["HF_HOME"], "hub")
for name in ("model.safetensors", "weights/extra.bin"):
    print("PATH " + hf_hub_download("standin/resnet18", name, local_files_only=True, cache_dir=cache))
)");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_CONTAINS(run.output, "PATH " + weights + "\n");
  EXPECT_CONTAINS(run.output, "PATH " + config + "\n");
}

TEST_F(HubTest, WeFindWhatPythonDownloaded) {
  StandIn& server = serve();
  const PythonRun run = run_python(root_, R"(
from huggingface_hub import hf_hub_download
for name in ("model.safetensors", "config.json"):
    print("PATH " + hf_hub_download("standin/resnet18", name))
)");
  ASSERT_EQ(run.status, 0) << run.output;
  const size_t before = server.requests().size();
  EXPECT_GE(before, 2u); // Python did fetch from the stand-in
  setenv("HF_HUB_OFFLINE", "1", 1);
  for (const std::string name : {"model.safetensors", "config.json"}) {
    const std::string path =
        resnet::hub::fetch_hub_file(kRepo, name, "main", quick());
    EXPECT_CONTAINS(run.output, "PATH " + path + "\n");
    EXPECT_EQ(sha256(path), hub_file(name)["sha256"]);
  }
  EXPECT_EQ(server.requests().size(), before);
}

TEST_F(HubTest, TokenGoesToTheHubAndNotToTheCdn) {
  StandIn& server = serve("--token s3cret");
  EXPECT_CONTAINS(
      error_of([&] {
        resnet::hub::fetch_hub_file(
            kRepo, "model.safetensors", "main", quick());
      }),
      "HF_TOKEN");
  setenv("HF_TOKEN", "s3cret", 1);
  const std::string path =
      resnet::hub::fetch_hub_file(kRepo, "model.safetensors", "main", quick());
  EXPECT_EQ(sha256(path), hub_file("model.safetensors")["sha256"]);
  unsetenv("HF_TOKEN");
  // The token file under HF_HOME, as huggingface_hub's login writes it.
  write_file(root_ / "hf" / "token", "s3cret\n");
  resnet::hub::fetch_hub_file(kRepo, "config.json", "main", quick());
  size_t hub_requests = 0;
  size_t cdn_requests = 0;
  const json requests = server.requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_TRUE(requests[0]["authorization"].is_null());
  for (size_t i = 1; i < requests.size(); ++i) {
    const json& request = requests[i];
    if (request["port"] == "cdn") {
      ++cdn_requests;
      EXPECT_TRUE(request["authorization"].is_null()) << request.dump();
    } else {
      ++hub_requests;
      EXPECT_EQ(request["authorization"], "Bearer s3cret") << request.dump();
    }
  }
  EXPECT_EQ(cdn_requests, 1u);
  EXPECT_EQ(hub_requests, 3u); // HEAD model, HEAD config, GET config
}

} // namespace

// ------------------------------------------------------- pretrained networks

// The tensor `name` of a file of tensors.
torch::Tensor tensor_in(const fs::path& file, const std::string& name) {
  for (const auto& [key, value] : resnet::read_state_dict(file.string())) {
    if (key == name) {
      return value;
    }
  }
  throw std::runtime_error("no " + name + " in " + file.string());
}

// Makes, with timm or torchvision, a network with random weights and batch
// norm statistics (`create`), saves it where the Hub stand-in or torch.hub's
// cache serves it (`save`, to `target`), and writes its output for one input
// into io.safetensors ({"x", "y"}). Returns that file.
fs::path python_network(
    const fs::path& root,
    const std::string& create,
    const std::string& save,
    const std::string& target) {
  const PythonRun run =
      run_python(
          root,
          R"(
import os, torch, timm, torchvision, safetensors.torch
torch.manual_seed(0)
target = ")" + target +
              R"("
)" + create + R"(
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2)
model.eval()
)" + save + R"(
x = torch.rand(2, 3, 64, 64)
with torch.no_grad():
    y = model(x)
safetensors.torch.save_file({"x": x, "y": y}, os.path.join(")" +
              root.string() + R"(", "io.safetensors"))
)");
  EXPECT_EQ(run.status, 0) << run.output;
  return root / "io.safetensors";
}

TEST_F(HubTest, PretrainedTimmNetworkBringsItsConfigAndGivesTimmsOutputs) {
  const fs::path served = root_ / "served";
  const auto io = python_network(
      root_,
      R"(model = timm.create_model("resnet18d.ra2_in1k", pretrained=False))",
      R"(from timm.models._hub import save_for_hf
save_for_hf(model, target, safe_serialization=True))",
      (served / "timm" / "resnet18d.ra2_in1k").string());
  StandIn& server = serve("--serve '" + served.string() + "'");
  auto p = resnet::hub::pretrained("resnet18d.ra2_in1k", quick());
  EXPECT_EQ(p.config.architecture, "resnet18d");
  EXPECT_EQ(p.config.num_classes, 1000);
  EXPECT_EQ(p.config.label_names.at(0), "tench");
  EXPECT_EQ(p.config.preprocess.interpolation(), "bicubic"); // timm's cfg
  EXPECT_EQ(p.config.preprocess.crop(), 224);
  EXPECT_EQ(p.config.preprocess.resize(), 256); // 224 / crop_pct 0.875
  EXPECT_EQ(p.published->hf_repo, "timm/resnet18d.ra2_in1k");
  EXPECT_NE(p.file.find("models--timm--resnet18d.ra2_in1k"), std::string::npos);
  EXPECT_EQ(server.seen("GET", "/cdn/").size(), 1u); // the weights, once
  torch::NoGradGuard no_grad;
  const auto y = p.model->forward(tensor_in(io, "x"));
  EXPECT_TRUE(torch::allclose(y, tensor_in(io, "y"), 1e-4, 1e-4))
      << (y - tensor_in(io, "y")).abs().max();
  // Again, offline: from the cache, without a request.
  const size_t before = server.requests().size();
  setenv("HF_HUB_OFFLINE", "1", 1);
  const auto again = resnet::hub::pretrained("resnet18d.ra2_in1k", quick());
  EXPECT_EQ(again.file, p.file);
  EXPECT_EQ(server.requests().size(), before);
}

TEST_F(HubTest, PretrainedTorchvisionNetworkFromTorchHubsCache) {
  const auto& row = resnet::hub::weights_or_throw("resnet18.DEFAULT");
  const auto io = python_network(
      root_,
      R"(model = torchvision.models.resnet18())",
      R"(folder = os.path.join(torch.hub.get_dir(), "checkpoints")
os.makedirs(folder, exist_ok=True)
torch.save(model.state_dict(), os.path.join(folder, target))
)",
      std::string(row.file));
  StandIn& server = serve();
  auto p = resnet::hub::pretrained("resnet18.DEFAULT", quick());
  EXPECT_EQ(p.published->name, "resnet18.IMAGENET1K_V1");
  EXPECT_EQ(p.file, (checkpoints() / std::string(row.file)).string());
  EXPECT_EQ(p.config.preprocess.resize(), 256);
  EXPECT_EQ(p.config.preprocess.crop(), 224);
  EXPECT_EQ(p.config.label_names.size(), 1000u);
  EXPECT_TRUE(server.requests().empty());
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(
      p.model->forward(tensor_in(io, "x")), tensor_in(io, "y"), 1e-4, 1e-4));
  // A name neither project uses: the close ones.
  try {
    resnet::hub::pretrained("resnet18.imagenet1k_v1", quick());
    ADD_FAILURE() << "an unknown name loaded";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(
        std::string(e.what()).find("resnet18.IMAGENET1K_V1"), std::string::npos)
        << e.what();
  }
}

TEST(ModelConfig, RoundTripsThroughTimmsLayout) {
  resnet::ModelConfig c;
  c.architecture = "resnet20";
  c.num_classes = 3;
  c.in_channels = 1;
  c.stem = "cifar";
  c.input_size = 28;
  c.preprocess.resize(28).crop(28).mean({0.25}).std({0.5});
  c.label_names = {"a", "b", "c"};
  const auto j = resnet::model_config_to_json(c);
  EXPECT_EQ(j["pretrained_cfg"]["input_size"], json({1, 28, 28}));
  EXPECT_EQ(j["pretrained_cfg"]["crop_pct"], 1.0);
  const auto back = resnet::model_config_from_json(j);
  EXPECT_EQ(back.architecture, "resnet20");
  EXPECT_EQ(back.num_classes, 3);
  EXPECT_EQ(back.in_channels, 1);
  EXPECT_EQ(back.stem, "cifar");
  EXPECT_EQ(back.preprocess.resize(), 28);
  EXPECT_EQ(back.preprocess.mean(), std::vector<double>{0.25});
  EXPECT_EQ(back.label_names, c.label_names);
  // Wrong descriptions are named.
  auto bad = j;
  bad["pretrained_cfg"]["mean"] = {0.1, 0.2, 0.3};
  try {
    resnet::model_config_from_json(bad, "x.json");
    ADD_FAILURE() << "three means for one channel accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(
        std::string(e.what()).find("resnet: x.json: expected one mean"),
        std::string::npos)
        << e.what();
  }
}
