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
//   find_package(CLI11 CONFIG REQUIRED)
//   target_link_libraries(resnet_load_speed PRIVATE resnet::resnet
//   CLI11::CLI11)

#include <resnet/io/weights.h>
#include <resnet/model/models.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string file;
  std::string into;
  int64_t repeat = 5;
  bool json = false;
};

// A command-line problem, or --help: main prints it and exits with `code`.
struct UsageError {
  std::string text;
  int code = 2;
};

Args parse_args(int argc, char** argv) {
  Args a;
  CLI::App app("Measures how fast a weight file loads.", "resnet_load_speed");
  app.option_defaults()->always_capture_default();
  app.add_option("--file", a.file, "the weight file")->required();
  app.add_option("--into", a.into, "load into this architecture");
  app.add_option("--repeat", a.repeat, "loads timed")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  app.add_flag("--json", a.json, "one JSON line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    throw UsageError{out.str() + err.str(), code == 0 ? 0 : 2};
  }
  return a;
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
  (u.code ? std::cerr : std::cout) << u.text;
  return u.code;
} catch (const c10::Error& e) {
  std::cerr << "resnet_load_speed: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "resnet_load_speed: " << e.what() << "\n";
  return 1;
}
