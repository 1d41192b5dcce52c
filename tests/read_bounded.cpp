// Reads one weight file with each public call and says what happened, for
// the HostileFiles tests, which start it once per file with a watchdog:
//
//   resnet_read_bounded FILE [KEY...]
//
// First it reads a small archive from memory, so that LibTorch's lazy
// set-up is done; then it caps its own address space at what it uses now
// plus what reading FILE may take (kReadMemoryPerByte times its size plus
// kReadMemoryFixed) plus room for the mapping of FILE and the threads
// (not under AddressSanitizer, which reserves terabytes). Then, for
// inspect_checkpoint, read_state_dict and load_state_dict (into a small
// module, not strict), one JSON line: the call, whether it succeeded, its
// error, the seconds it took, the most memory it held at once beyond what
// was in use before it (VmHWM after resetting it, on Linux), and the first
// value of each KEY that read_state_dict returned or load_state_dict
// loaded.

#include <resnet/io/checkpoint.h>
#include <resnet/io/weights.h>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM", "VmSize"); -1
// where there is none.
int64_t status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::stoll(line.substr(field.size() + 1)) * 1024;
    }
  }
  return -1;
}

// Makes VmHWM start again from the current resident size.
void reset_peak() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

// What load_state_dict loads into: names some corpus files use.
struct Small : torch::nn::Module {
  Small() {
    conv = register_module("conv", torch::nn::Conv2d(1, 2, 1));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(4));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
};

// The first value of each of `keys` that `state` has, as out["values"].
void first_values(
    const resnet::StateDict& state,
    const std::vector<std::string>& keys,
    nlohmann::json& out) {
  for (const auto& key : keys) {
    for (const auto& item : state) {
      if (item.first == key) {
        out["values"][key] = item.second.numel() > 0
            ? item.second.reshape(-1)[0].to(torch::kDouble).item<double>()
            : 0.0;
        break;
      }
    }
  }
}

template <class F>
nlohmann::json measure(const char* call, F&& f) {
  nlohmann::json out = {{"call", call}};
  reset_peak();
  const int64_t before = status_bytes("VmRSS");
  const auto start = std::chrono::steady_clock::now();
  try {
    f(out);
    out["ok"] = true;
  } catch (const c10::Error& e) {
    out["ok"] = false;
    out["error"] = e.what_without_backtrace();
  } catch (const std::exception& e) {
    out["ok"] = false;
    out["error"] = std::string("not a c10::Error: ") + e.what();
    out["foreign"] = true;
  }
  out["seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  out["peak"] = status_bytes("VmHWM") - before;
  return out;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: resnet_read_bounded FILE [KEY...]\n";
    return 2;
  }
  const std::string path = argv[1];
  std::vector<std::string> keys(argv + 2, argv + argc);
  Small model;

  // LibTorch's one-time set-up, before anything is measured.
  const auto bytes = resnet::detail::write_torch_save(
      {{"conv.weight", torch::ones({2, 1, 1, 1})}});
  resnet::StateDict warm;
  resnet::detail::find_state_dict(
      resnet::detail::read_torch_save_bytes(bytes.data(), bytes.size()),
      "",
      warm);
  resnet::load_state_dict(model, warm, resnet::LoadOptions().strict(false));

  struct stat st {};
  const uint64_t size =
      ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  const uint64_t allowed = resnet::detail::kReadMemoryPerByte * size +
      resnet::detail::kReadMemoryFixed;
  if (!kSanitized) {
    // The mapping of the file and thread stacks count in the address space
    // but are not the reader's allocations: room for them on top.
    const int64_t now = status_bytes("VmSize");
    if (now > 0) {
      rlimit limit{};
      limit.rlim_cur = limit.rlim_max =
          static_cast<rlim_t>(now) + allowed + size + (uint64_t{256} << 20);
      ::setrlimit(RLIMIT_AS, &limit);
    }
  }
  nlohmann::json header = {
      {"file", path},
      {"size", size},
      {"allowed", allowed},
      {"sanitized", kSanitized}};
  std::cout << header.dump() << std::endl;

  std::cout << measure(
                   "inspect",
                   [&](nlohmann::json& out) {
                     const auto info = resnet::inspect_checkpoint(path);
                     out["entries"] = info.entries.size();
                     out["listing"] = resnet::to_string(info, 20).size();
                   })
                   .dump()
            << std::endl;
  std::cout << measure(
                   "read",
                   [&](nlohmann::json& out) {
                     const auto state = resnet::read_state_dict(path);
                     out["tensors"] = state.size();
                     first_values(state, keys, out);
                   })
                   .dump()
            << std::endl;
  std::cout << measure(
                   "load",
                   [&](nlohmann::json& out) {
                     const auto report = resnet::load_state_dict(
                         model, path, resnet::LoadOptions().strict(false));
                     out["loaded"] = report.loaded.size();
                     first_values(
                         resnet::state_dict(model), report.loaded, out);
                   })
                   .dump()
            << std::endl;
  return 0;
}
