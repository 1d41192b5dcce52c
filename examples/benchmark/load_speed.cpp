// Measures how fast a weight file loads: reads it with
// resnet::read_state_dict (which tells torch.save, safetensors and
// TorchScript files apart by their content), or with --into ARCH loads it
// into a network with resnet::load_state_dict, several times, and prints the
// median time and throughput.
//
//   resnet_load_speed --file resnet50.pth [--into resnet50] [--repeat 5]
//                     [--json]
//
// examples/benchmark/load_speed.py does the same in Python (torch.load or
// safetensors.torch.load_file) and compare_load.sh runs both, alternating.
//
// Build it alone against an installed resnet package:
//   find_package(resnet CONFIG REQUIRED)
//   add_executable(resnet_load_speed load_speed.cpp)
//   target_link_libraries(resnet_load_speed PRIVATE resnet::resnet)

#include <resnet/io/weights.h>
#include <resnet/model/models.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string file;
  std::string into;
  int64_t repeat = 5;
  bool json = false;
};

const char* kUsage =
    "usage: resnet_load_speed --file PATH [--into ARCH] [--repeat N] "
    "[--json]\n";

// A command-line problem, or --help: main prints it with the usage and
// exits with `code`.
struct UsageError {
  std::string problem;
  int code = 2;
};

[[noreturn]] void usage(const std::string& problem, int code = 2) {
  throw UsageError{problem, code};
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      usage("", 0);
    } else if (flag == "--json") {
      args.json = true;
    } else if (
        (flag == "--file" || flag == "--into" || flag == "--repeat") &&
        i + 1 < argc) {
      const std::string value = argv[++i];
      if (flag == "--file") {
        args.file = value;
      } else if (flag == "--into") {
        args.into = value;
      } else {
        char* end = nullptr;
        args.repeat = std::strtoll(value.c_str(), &end, 10);
        if (*end != '\0' || args.repeat < 1) {
          usage("--repeat expects a whole number >= 1, got '" + value + "'");
        }
      }
    } else {
      usage("unknown or incomplete flag '" + flag + "'");
    }
  }
  if (args.file.empty()) {
    usage("--file is required");
  }
  return args;
}

} // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  const auto bytes = std::filesystem::file_size(args.file);
  resnet::AnyResNet model;
  if (!args.into.empty()) {
    model = resnet::create(args.into);
  }
  std::vector<double> ms;
  size_t tensors = 0;
  for (int64_t i = 0; i < args.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (model.is_empty()) {
      tensors = resnet::read_state_dict(args.file).size();
    } else {
      tensors = resnet::load_state_dict(*model, args.file).loaded.size();
    }
    const auto stop = std::chrono::steady_clock::now();
    ms.push_back(
        std::chrono::duration<double, std::milli>(stop - start).count());
  }
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  const double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  const double mb_per_s = static_cast<double>(bytes) / 1e6 / (median / 1e3);
  if (args.json) {
    std::cout << std::setprecision(6) << "{\"impl\": \"c++\", \"file\": \""
              << args.file << "\", \"into\": \"" << args.into
              << "\", \"bytes\": " << bytes << ", \"tensors\": " << tensors
              << ", \"repeat\": " << args.repeat
              << ", \"ms_median\": " << median << ", \"ms_min\": " << ms.front()
              << ", \"mb_per_s\": " << mb_per_s << "}\n";
  } else {
    std::cout << args.file << ": " << tensors << " tensors, " << bytes / 1e6
              << " MB, median " << median << " ms (" << mb_per_s
              << " MB/s) over " << args.repeat << " loads\n";
  }
  return 0;
} catch (const UsageError& u) {
  if (!u.problem.empty()) {
    std::cerr << "resnet_load_speed: " << u.problem << "\n";
  }
  (u.code ? std::cerr : std::cout) << kUsage;
  return u.code;
} catch (const c10::Error& e) {
  std::cerr << "resnet_load_speed: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "resnet_load_speed: " << e.what() << "\n";
  return 1;
}
