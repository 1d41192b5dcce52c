#pragma once

// Helpers shared by the test files.

#include <resnet/resnet.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

extern char** environ;

namespace resnet_test {

inline int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) {
    n += p.numel();
  }
  return n;
}

/// One state_dict entry as PyTorch lists it: "name kind shape".
inline std::string
describe(const std::string& name, const char* kind, const torch::Tensor& t) {
  std::string shape;
  for (auto s : t.sizes()) {
    shape += (shape.empty() ? "" : "x") + std::to_string(s);
  }
  return name + " " + kind + " " + (shape.empty() ? "scalar" : shape);
}

/// Every parameter and buffer as "name kind shape", in state_dict order.
inline std::vector<std::string> state_entries(const torch::nn::Module& m) {
  std::vector<std::string> out;
  const auto params = m.named_parameters();
  for (const auto& item : resnet::state_dict(m)) {
    const bool is_param = params.find(item.first) != nullptr;
    out.push_back(
        describe(item.first, is_param ? "param" : "buffer", item.second));
  }
  return out;
}

/// The message of the c10::Error that `f` throws, or "" if it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

/// Deep copies of every entry, to check that a failed call changed nothing.
inline std::vector<torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& item : resnet::state_dict(m)) {
    out.push_back(item.second.clone());
  }
  return out;
}

/// Whether every entry of `m` still equals its `snapshot`.
inline bool unchanged(
    const torch::nn::Module& m,
    const std::vector<torch::Tensor>& s) {
  const auto now = resnet::state_dict(m);
  if (now.size() != s.size()) {
    return false;
  }
  for (size_t i = 0; i < s.size(); ++i) {
    if (!torch::equal(now[i].second, s[i])) {
      return false;
    }
  }
  return true;
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// Relative error ||a - b|| / ||b||.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm().clamp_min(1e-30)).item<double>();
}

/// Float32 as written on the GPU for the guard's life: no TF32 in cuDNN's
/// convolutions or cuBLAS's products; with `deterministic`, also cuDNN's
/// deterministic algorithms, not autotuned. The settings are put back after.
class StrictCudaMath {
 public:
  explicit StrictCudaMath(bool deterministic = false)
      : tf32_cudnn_(context().allowTF32CuDNN()),
        tf32_cublas_(context().allowTF32CuBLAS()),
        deterministic_(context().deterministicCuDNN()),
        benchmark_(context().benchmarkCuDNN()) {
    context().setAllowTF32CuDNN(false);
    context().setAllowTF32CuBLAS(false);
    if (deterministic) {
      context().setDeterministicCuDNN(true);
      context().setBenchmarkCuDNN(false);
    }
  }
  ~StrictCudaMath() {
    context().setAllowTF32CuDNN(tf32_cudnn_);
    context().setAllowTF32CuBLAS(tf32_cublas_);
    context().setDeterministicCuDNN(deterministic_);
    context().setBenchmarkCuDNN(benchmark_);
  }
  StrictCudaMath(const StrictCudaMath&) = delete;
  StrictCudaMath& operator=(const StrictCudaMath&) = delete;

 private:
  static at::Context& context() {
    return at::globalContext();
  }
  bool tf32_cudnn_;
  bool tf32_cublas_;
  bool deterministic_;
  bool benchmark_;
};

/// Removes a file, or a folder with all it holds; nothing where there is
/// nothing. Not std::filesystem::remove_all, which crashed this test program
/// on folders holding files when built by GCC 13.3 against PyPI's LibTorch
/// 2.11 (its libtorch_cpu.so exports a std::filesystem of its own; a small
/// program linked to it did not crash, so the cause is not settled).
inline void remove_tree(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::symlink_status(path, ec);
  if (ec || !fs::exists(status)) {
    return;
  }
  if (fs::is_directory(status)) {
    std::vector<fs::path> entries;
    for (const auto& e : fs::directory_iterator(path)) {
      entries.push_back(e.path());
    }
    for (const auto& e : entries) {
      remove_tree(e);
    }
  }
  fs::remove(path);
}

/// An empty folder of a test's own, `relative` under the build tree's test
/// folder: whatever an earlier run left there is removed first.
inline std::filesystem::path work_dir(const std::string& relative) {
  const auto dir = std::filesystem::path(RESNET_TEST_WORK_DIR) / relative;
  remove_tree(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// A program started in a process of its own, its standard output and
/// error in a file; killed if still running when the object goes.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }

  /// Starts `args[0]` with `args`, in `env` (KEY=VALUE entries; this
  /// process's environment when empty), its output in `output_file`. Empty
  /// when it started, else why not.
  std::string start(
      std::vector<std::string> args,
      const std::filesystem::path& output_file,
      std::vector<std::string> env = {}) {
    log = output_file;
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env) {
      envp.push_back(e.data());
    }
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(
        &actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(
        &pid,
        argv[0],
        &actions,
        nullptr,
        argv.data(),
        env.empty() ? environ : envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid = -1;
      return std::string("posix_spawn: ") + std::strerror(rc);
    }
    return "";
  }

  /// Waits at most `limit`; false (and the process killed) if it ran over.
  template <class Duration>
  bool wait(Duration limit) {
    if (pid <= 0) {
      return false;
    }
    const auto start_time = std::chrono::steady_clock::now();
    while (true) {
      const pid_t done = ::waitpid(pid, &status, WNOHANG);
      seconds_taken = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start_time)
                          .count();
      if (done == pid) {
        pid = -1;
        return true;
      }
      if (std::chrono::steady_clock::now() - start_time > limit) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        pid = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  bool exited_ok() const {
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  /// "exit status N" or "killed by signal N".
  std::string how_it_ended() const {
    return WIFSIGNALED(status)
        ? "killed by signal " + std::to_string(WTERMSIG(status))
        : "exit status " + std::to_string(WEXITSTATUS(status));
  }
  /// What it wrote so far.
  std::string output() const {
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  pid_t pid = -1;
  std::filesystem::path log;
  int status = 0;
  double seconds_taken = 0;
};

} // namespace resnet_test
