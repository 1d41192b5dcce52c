// Measures how fast a ResNet runs: inference or training iterations on
// synthetic data, images per second and milliseconds per iteration.
//
//   resnet_benchmark --arch resnet50 --batch 32 --size 224 --mode infer
//                    [--device cpu|cuda] [--precision fp32|bf16|fp16|int8]
//                    [--channels-last] [--fuse] [--cuda-graph] [--threads N]
//                    [--warmup 3] [--iters 20] [--json]   (--help lists all)
//
// A training iteration is forward, cross-entropy, backward and an SGD step
// (momentum 0.9, weight decay 1e-4); bf16/fp16 training runs under autocast
// (fp16 with loss scaling). Inference runs in inference mode; bf16/fp16
// inference casts the network and the input (--precision is --dtype's
// other name; with --fuse on the CPU, bf16 runs oneDNN's fused bf16
// convolutions). --cache-memory turns on the
// library's CPU memory cache. examples/benchmark/
// torchvision_bench.py runs the same workload in Python with torchvision and
// compare.sh runs both.
//
// Build it alone against an installed resnet package:
//   find_package(resnet CONFIG REQUIRED)
//   find_package(CLI11 CONFIG REQUIRED)                     # libcli11-dev
//   add_executable(resnet_benchmark benchmark.cpp)
//   target_link_libraries(resnet_benchmark PRIVATE resnet::resnet CLI11::CLI11)

#include <resnet/inference/cuda_graph.h>
#include <resnet/inference/fold.h>
#include <resnet/inference/memory.h>
#include <resnet/inference/precision.h>
#include <resnet/resnet.h>
#include <resnet/train/cuda_graph_step.h>
#include <resnet/train/grad_scaler.h>
#include <resnet/train/optim.h>

#include <torch/torch.h>
#include <CLI/CLI.hpp>

#if RESNET_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Args {
  std::string arch = "resnet18";
  int64_t batch = 1;
  int64_t size = 224;
  std::string mode = "infer";
  std::string device;
  std::string dtype = "fp32";
  bool channels_last = false;
  bool fuse = false;
  std::string cpu_kernels;
  std::string gpu_kernels;
  bool cuda_graph = false;
  bool cache_memory = false;
  std::string stem = "auto";
  int64_t classes = 0;
  int64_t threads = 0;
  int64_t warmup = 3;
  int64_t iters = 20;
  bool json = false;
};

// A command-line problem, or --help: main prints it and exits with `code`.
struct UsageError {
  std::string text;
  int code = 2;
};

// The command line. --help prints the flags and exits 0; a mistake says
// what is wrong and exits 2.
Args parse_args(int argc, char** argv) {
  Args a;
  CLI::App app("Measures how fast a ResNet runs.", "resnet_benchmark");
  // --help shows the defaults, and the last of a repeated flag counts.
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  const auto max = std::numeric_limits<int64_t>::max();
  const auto positive = CLI::Range(int64_t{1}, max, "POSITIVE");
  const auto whole = CLI::Range(int64_t{0}, max, "NONNEGATIVE");
  const auto opt = [&](auto&&... o) { return app.add_option(o...); };
  const auto flag = [&](auto&&... o) { return app.add_flag(o...); };
  opt("--arch", a.arch, "architecture (see resnet::architectures)");
  opt("--batch", a.batch, "images per iteration")->check(positive);
  opt("--size", a.size, "image height and width")->check(positive);
  opt("--mode", a.mode, "")->check(CLI::IsMember({"infer", "train"}));
  opt("--device", a.device, "cpu, cuda or cuda:N (default: cuda if any)");
  opt("--dtype,--precision", a.dtype, "fp16 needs cuda; int8 the CPU, --fuse")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "int8"}));
  flag("--channels-last", a.channels_last, "network and input channels_last");
  auto* fuse =
      flag("--fuse", a.fuse, "fold batch norms into convolutions (inference)");
  opt("--cpu-kernels",
      a.cpu_kernels,
      "with --fuse on the CPU (default: onednn-fused where LibTorch has it)")
      ->check(CLI::IsMember({"onednn-fused", "onednn-layout", "aten"}))
      ->needs(fuse);
  opt("--gpu-kernels",
      a.gpu_kernels,
      "with --fuse on CUDA (default: cudnn-fused, one cuDNN call for "
      "convolution, bias, addition and ReLU)")
      ->check(CLI::IsMember({"cudnn-fused", "aten"}))
      ->needs(fuse);
  flag("--cuda-graph", a.cuda_graph, "replay one iteration as a CUDA graph");
  opt("--stem", a.stem, "auto: cifar up to 64x64")
      ->check(CLI::IsMember({"auto", "imagenet", "cifar"}));
  opt("--classes", a.classes, "classifier outputs (0: 1000, 10 with cifar)")
      ->check(whole);
  flag("--cache-memory", a.cache_memory, "resnet::enable_cpu_memory_cache");
  opt("--threads", a.threads, "CPU threads (0: $OMP_NUM_THREADS, else all)")
      ->check(CLI::Range(0, 4096));
  opt("--warmup", a.warmup, "untimed iterations first")->check(whole);
  opt("--iters", a.iters, "timed iterations")->check(positive);
  flag("--json", a.json, "print one JSON object instead of text");
  try {
    app.parse(argc, argv);
    if (a.dtype == "int8" && (!a.fuse || a.mode == "train")) {
      throw CLI::ValidationError("--dtype int8 is for --fuse --mode infer");
    }
    if (a.mode == "train" && a.fuse) {
      throw CLI::ValidationError("--fuse is for --mode infer");
    }
    if (a.mode == "train" && a.cuda_graph && a.dtype == "fp16") {
      throw CLI::ValidationError(
          "--cuda-graph in training runs fp32 or bf16 (fp16 loss scaling "
          "reads the gradients on the host)");
    }
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    throw UsageError{out.str() + err.str(), code == 0 ? 0 : 2};
  }
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Peak memory in MiB: the CUDA caching allocator's peak on a GPU, the
// process's peak resident set on the CPU.
double peak_memory_mib(const torch::Device& device) {
#if RESNET_WITH_CUDA
  if (device.is_cuda()) {
    // A bare "cuda" has no index: it means the current device.
    const auto index =
        device.has_index() ? device.index() : c10::cuda::current_device();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20);
  }
#endif
  (void)device;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0; // KiB on Linux
}

} // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);

  // --- setup: threads, device, precision --------------------------------
  // Debian's LibTorch starts with one thread: say how many.
  resnet::set_num_threads(static_cast<int>(args.threads));
  const torch::Device device = args.device.empty()
      ? resnet::default_device()
      : resnet::parse_device(args.device);
  if (device.is_cuda()) {
    torch::globalContext().setBenchmarkCuDNN(true);
  }
  if (args.cache_memory) {
    resnet::enable_cpu_memory_cache();
  }
  const auto dtype = args.dtype == "bf16" ? torch::kBFloat16
      : args.dtype == "fp16"              ? torch::kFloat16
                                          : torch::kFloat32;
  const bool int8 = args.dtype == "int8";
  TORCH_CHECK(
      !int8 || device.is_cpu(), "resnet_benchmark: int8 runs on the CPU");
  TORCH_CHECK(
      !(device.is_cpu() && dtype == torch::kFloat16),
      "resnet_benchmark: fp16 needs --device cuda; use bf16 on the CPU");
  TORCH_CHECK(
      !args.cuda_graph || device.is_cuda(),
      "resnet_benchmark: --cuda-graph needs --device cuda");
  if (device.is_cpu() && (int8 || dtype == torch::kBFloat16) && !args.json) {
    const auto fit =
        resnet::cpu_precision_fit(resnet::parse_precision(args.dtype));
    if (!fit.faster) {
      std::cerr << "resnet_benchmark: note: " << fit.reason << "\n";
    }
  }
  const bool train = args.mode == "train";
  const auto stem = resnet::parse_stem(args.stem, args.size);
  const bool cifar = stem == resnet::Stem::Cifar;
  const int64_t classes = args.classes ? args.classes : cifar ? 10 : 1000;
  const auto memory_format = args.channels_last
      ? torch::MemoryFormat::ChannelsLast
      : torch::MemoryFormat::Contiguous;

  // --- model ------------------------------------------------------------
  torch::manual_seed(0);
  resnet::AnyResNet model = resnet::create(
      args.arch, resnet::ResNetOptions().num_classes(classes).stem(stem));
  model->to(device);
  if (args.channels_last) {
    resnet::to_channels_last(*model);
  }
  model->train(train);

  // --- data: random images (never zeros) and labels ---------------------
  auto images = torch::randn({args.batch, 3, args.size, args.size}, device)
                    .contiguous(memory_format);
  const auto labels = torch::randint(
      classes, {args.batch}, torch::dtype(torch::kLong).device(device));

  // --- one iteration ----------------------------------------------------
  std::function<void()> iteration;
  std::unique_ptr<torch::optim::SGD> optimizer;
  std::unique_ptr<resnet::GradScaler> scaler;
  resnet::InferenceResNet fused{nullptr};
  resnet::Int8ResNet quantized;
  std::unique_ptr<resnet::CudaGraphRunner> graph;
  std::unique_ptr<resnet::CudaGraphTrainStep> train_graph;
  if (train) {
    // Multi-tensor SGD, as Python's torch.optim.SGD uses on CUDA.
    optimizer = std::make_unique<resnet::ForeachSGD>(
        model->parameters(),
        torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4));
    scaler = std::make_unique<resnet::GradScaler>(
        resnet::GradScalerOptions().enabled(dtype == torch::kFloat16));
    const auto loss_of = [&](const torch::Tensor& x, const torch::Tensor& y) {
      resnet::Autocast autocast(
          device.type(), dtype, /*enabled=*/dtype != torch::kFloat32);
      return torch::cross_entropy_loss(model->forward(x), y);
    };
    // loss_of by value: it ends with this block, the iteration does not.
    iteration = [&, loss_of] {
      resnet::clear_gradients(*optimizer);
      const auto loss = loss_of(images, labels);
      scaler->scale(loss).backward();
      scaler->step(*optimizer);
      scaler->update();
    };
    if (args.cuda_graph) {
      // The whole step in one graph: forward, loss, backward, SGD step.
      train_graph = std::make_unique<resnet::CudaGraphTrainStep>(
          *model, *optimizer, loss_of, images, labels);
      iteration = [&] { train_graph->replay(); };
    }
  } else {
    std::function<torch::Tensor(const torch::Tensor&)> forward;
    if (args.fuse) {
      fused = resnet::fuse_for_inference(
          *model,
          resnet::FuseOptions()
              .mkldnn(args.cpu_kernels != "aten")
              .onednn_fused(args.cpu_kernels != "onednn-layout")
              .cudnn_fused(args.gpu_kernels != "aten"));
      forward = [&](const torch::Tensor& x) { return fused->forward(x); };
      if (int8) { // calibrated on random images: for speed only
        quantized = resnet::quantize(
            fused, torch::randn({32, 3, args.size, args.size}));
        forward = [&](const torch::Tensor& x) { return quantized(x); };
      }
    } else {
      forward = [&](const torch::Tensor& x) { return model->forward(x); };
    }
    if (dtype != torch::kFloat32) {
      resnet::cast_floating(
          args.fuse ? static_cast<torch::nn::Module&>(*fused)
                    : static_cast<torch::nn::Module&>(*model),
          dtype);
      images = images.to(dtype);
    }
    if (args.cuda_graph) {
      graph = std::make_unique<resnet::CudaGraphRunner>(forward, images);
      iteration = [&] { (*graph)(images); };
    } else {
      iteration = [&] {
        c10::InferenceMode inference;
        forward(images);
      };
    }
  }

  // --- measure ----------------------------------------------------------
  const auto sync = [&] {
    if (device.is_cuda()) {
      torch::cuda::synchronize(device.index());
    }
  };
  for (int64_t i = 0; i < args.warmup; ++i) {
    iteration();
  }
  sync();
  std::vector<double> ms;
  for (int64_t i = 0; i < args.iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    iteration();
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - start)
                     .count());
  }
  const double ms_median = median(ms);
  const double ms_min = *std::min_element(ms.begin(), ms.end());
  const double ms_max = *std::max_element(ms.begin(), ms.end());
  const double img_per_s = 1000.0 * args.batch / ms_median;
  const double peak_mib = peak_memory_mib(device);

  // --- report -----------------------------------------------------------
  // The kernels a fused network ran on the CPU ("+aten": some convolutions
  // fell back to ATen's, oneDNN having refused them); empty otherwise.
  const bool cpu_fused =
      args.fuse && device.is_cpu() && dtype == torch::kFloat32;
  const bool fell_back = cpu_fused &&
      fused->cpu_kernels() == resnet::CpuKernels::OneDnnFused &&
      !fused->uses_onednn_fused();
  const std::string kernels = int8 ? "onednn-int8"
      : cpu_fused ? std::string(resnet::to_string(fused->cpu_kernels())) +
          (fell_back ? "+aten" : "")
                  : "";
  // The kernels a fused network ran on a CUDA device; empty otherwise.
  const std::string gpu_kernels = !args.fuse || !device.is_cuda() ? ""
      : fused->uses_cudnn_fused() && torch::globalContext().hasCuDNN()
      ? "cudnn-fused"
      : "aten";
  std::ostringstream out;
  out << std::fixed;
  if (args.json) {
    const auto flag = [](bool b) { return b ? "true" : "false"; };
    out << std::setprecision(4) << "{\"impl\": \"c++\", \"torch\": \""
        << TORCH_VERSION << "\", \"arch\": \"" << args.arch
        << "\", \"mode\": \"" << args.mode << "\", \"batch\": " << args.batch
        << ", \"size\": " << args.size << ", \"stem\": \""
        << (cifar ? "cifar" : "imagenet") << "\", \"device\": \""
        << device.str() << "\", \"dtype\": \"" << args.dtype
        << "\", \"channels_last\": " << flag(args.channels_last)
        << ", \"fuse\": " << flag(args.fuse) << ", \"cpu_kernels\": \""
        << kernels << "\", \"gpu_kernels\": \"" << gpu_kernels << "\""
        << ", \"cuda_graph\": " << flag(args.cuda_graph)
        << ", \"cache_memory\": " << flag(args.cache_memory)
        << ", \"threads\": " << torch::get_num_threads()
        << ", \"cpu_features\": \"" << resnet::cpu_features().to_string()
        << "\", \"iters\": " << args.iters << ", \"img_per_s\": " << img_per_s
        << ", \"ms_median\": " << ms_median << ", \"ms_min\": " << ms_min
        << ", \"ms_max\": " << ms_max << ", \"peak_memory_mib\": " << peak_mib
        << "}\n";
  } else {
    out << std::setprecision(2) << args.arch << " " << args.mode << ", batch "
        << args.batch << ", " << args.size << "x" << args.size << ", " << device
        << " " << args.dtype << (args.channels_last ? " channels_last" : "")
        << (args.fuse ? " fused (" + kernels + gpu_kernels + ")" : "")
        << (args.cuda_graph ? " cuda-graph" : "") << ", "
        << torch::get_num_threads() << " threads, LibTorch " << TORCH_VERSION
        << ", CPU: " << resnet::cpu_features().to_string() << "\n"
        << "  " << img_per_s << " images/s\n"
        << "  " << ms_median << " ms per iteration (median of " << args.iters
        << "; min " << ms_min << ", max " << ms_max << ")\n"
        << "  peak memory " << std::setprecision(0) << peak_mib << " MiB"
        << (device.is_cuda() ? " (CUDA allocator)" : " (process RSS)") << "\n";
  }
  std::cout << out.str();
  return 0;
} catch (const UsageError& u) {
  (u.code ? std::cerr : std::cout) << u.text;
  return u.code;
} catch (const c10::Error& e) {
  std::cerr << "resnet_benchmark: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "resnet_benchmark: " << e.what() << "\n";
  return 1;
}
