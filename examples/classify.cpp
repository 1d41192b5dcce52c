// Classifies image files with a ResNet, printing the top classes:
//
//   classify --model resnet50.a1_in1k IMAGE...    a published network by name
//   classify --weights runs/train/best.pt IMAGE...  the trainer's, described
//                                                 by config.json beside it
//   classify --weights resnet50.pth --arch resnet50 IMAGE...  any weights
//
// --model takes torchvision's and timm's names
// (resnet::hub::pretrained_names(), e.g. resnet50.IMAGENET1K_V2,
// resnet50d.ra2_in1k): the weights are found in the caches of torch.hub and
// huggingface_hub or downloaded into them, and bring their preprocessing and
// class names. --weights takes any file resnet::load_state_dict reads
// (torchvision's .pth, timm's safetensors, a training checkpoint, with --entry
// for its state dict's name); a config.json in its folder (the trainer writes
// one, a Hub snapshot has one) gives the architecture, input channels,
// preprocessing and class names. Without one, --arch names the architecture,
// the classes are counted from fc.weight and ImageNet's preprocessing applies
// (--resize, --crop and
// --classes override).
//
// --precision bf16 or int8 runs the fused network on the CPU in that
// precision (bf16 also on a GPU); auto takes the fastest this CPU runs
// (resnet::fastest_cpu_precision). int8 calibrates on the images of
// --calibrate DIR first; --save-int8 FILE keeps the result (with a
// config.json beside it), and --weights FILE then runs it directly.
//
// Build it alone against an installed resnet package:
//   find_package(resnet CONFIG REQUIRED)
//   find_package(PNG REQUIRED)                              # libpng-dev
//   find_package(CLI11 CONFIG REQUIRED)                     # libcli11-dev
//   find_package(PkgConfig REQUIRED)
//   pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
//   add_executable(classify classify.cpp)                   # libturbojpeg0-dev
//   target_link_libraries(classify PRIVATE resnet::hub PNG::PNG
//                         PkgConfig::TURBOJPEG CLI11::CLI11)
// (resnet::resnet instead of resnet::hub: everything but --model.)

#include <resnet/data/image.h>
#include <resnet/data/image_folder.h>
#include <resnet/data/transforms.h>
#include <resnet/io/model_config.h>
#include <resnet/model/config.h>
#include <resnet/resnet.h>
#if RESNET_WITH_HUB
#include <resnet/hub/pretrained.h>
#endif

#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef RESNET_CLASSES_FILE
#define RESNET_CLASSES_FILE "imagenet_classes.txt"
#endif

namespace {

struct Args {
  std::string model;
  std::string weights;
  std::string entry;
  std::string arch;
  std::string device;
  std::string classes = RESNET_CLASSES_FILE;
  std::string precision;
  std::string calibrate;
  std::string save_int8;
  int64_t topk = 5;
  int64_t resize = 0;
  int64_t crop = 0;
  std::vector<std::string> images;
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
  CLI::App app("Classifies images with a ResNet checkpoint.", "classify");
  app.add_option("IMAGE", a.images, "PNG or JPEG files")->required();
  // The flags: --help shows their defaults, and the last one given counts.
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  const auto positive =
      CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max(), "POSITIVE");
  const auto model =
      app.add_option("--model", a.model, "published weights by name");
  const auto weights =
      app.add_option("--weights", a.weights, "checkpoint or weights file");
  model->excludes(weights);
  app.add_option("--arch", a.arch, "any of resnet::architectures()");
  app.add_option("--topk", a.topk, "classes printed per image")
      ->check(positive);
  app.add_option("--entry", a.entry, "the state dict's name in a checkpoint");
  app.add_option(
      "--device", a.device, "cpu, cuda or cuda:N (default: cuda if any)");
  app.add_option("--classes", a.classes, "class names, one per line");
  app.add_option(
         "--resize",
         a.resize,
         "shorter side resized to N (default: the weights')")
      ->check(positive);
  app.add_option("--crop", a.crop, "central NxN crop (default: the weights')")
      ->check(positive);
  app.add_option(
         "--precision",
         a.precision,
         "fp32, bf16, int8 or auto (default: fp32; int8 for an int8 file)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "auto"}));
  app.add_option(
      "--calibrate", a.calibrate, "folder of images to calibrate int8 on");
  app.add_option("--save-int8", a.save_int8, "write the int8 network here");
  try {
    app.parse(argc, argv);
    if (a.model.empty() && a.weights.empty()) {
      throw CLI::RequiredError("--model or --weights");
    }
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    throw UsageError{out.str() + err.str(), code == 0 ? 0 : 2};
  }
  return a;
}

// The network and its description: published weights by name, or a
// weights file with the config.json beside it, or with --arch.
std::pair<resnet::AnyResNet, resnet::ModelConfig> load(const Args& a) {
  if (!a.model.empty()) {
#if RESNET_WITH_HUB
    auto p = resnet::hub::pretrained(a.model);
    return {p.model, p.config};
#else
    throw std::runtime_error(
        "--model needs the library built with libcurl (resnet::hub); give "
        "--weights FILE --arch NAME");
#endif
  }
  auto config = resnet::find_model_config(a.weights);
  const auto state = resnet::read_state_dict(a.weights, a.entry);
  if (!config) {
    if (a.arch.empty()) {
      throw UsageError{
          "--arch is required: there is no config.json beside " + a.weights +
              "\n",
          2};
    }
    config.emplace();
    for (const auto& item : state) { // the classes, from fc.weight
      const auto& name = item.first;
      if (name.size() >= 9 &&
          name.compare(name.size() - 9, 9, "fc.weight") == 0) {
        config->num_classes = item.second.size(0);
      }
    }
  }
  config->architecture = a.arch.empty() ? config->architecture : a.arch;
  auto model = resnet::create(*config);
  resnet::load_state_dict(*model, state, {}, "'" + a.weights + "'");
  return {model, *config};
}

// The precision to run in: as asked, or the fastest this CPU runs for
// auto. Says so where the one asked for is slower than float32 here.
resnet::Precision
choose_precision(const Args& a, bool int8_file, const torch::Device& device) {
  using resnet::Precision;
  auto p = int8_file ? Precision::Int8 : Precision::Float32;
  if (a.precision == "auto" && !int8_file && device.is_cpu()) {
    p = resnet::fastest_cpu_precision(!a.calibrate.empty());
  } else if (!a.precision.empty() && a.precision != "auto") {
    p = resnet::parse_precision(a.precision);
  }
  const auto fail = [](const std::string& why) {
    throw UsageError{"classify: " + why + "\n", 2};
  };
  if (int8_file && p != Precision::Int8) {
    fail(a.weights + " is an int8 network: --precision int8, or none");
  }
  if (!int8_file && p == Precision::Int8 && a.calibrate.empty()) {
    fail("--precision int8 needs --calibrate DIR or a --save-int8 file");
  }
  if (p == Precision::Int8 && !device.is_cpu()) {
    fail("int8 runs on the CPU: add --device cpu");
  }
  if (!a.save_int8.empty() && (p != Precision::Int8 || int8_file)) {
    fail("--save-int8 keeps what --precision int8 --calibrate DIR makes");
  }
  const auto fit = resnet::cpu_precision_fit(p);
  if (device.is_cpu() && !fit.faster) {
    std::cerr << "classify: " << resnet::to_string(p)
              << " is slower than fp32 here: " << fit.reason << "\n";
  }
  return p;
}

// The weights' preprocessing with --resize and --crop applied.
resnet::Preprocess preprocessing(
    const Args& a,
    const resnet::ModelConfig& config) {
  auto prep = config.preprocess;
  prep.resize(a.resize > 0 ? a.resize : prep.resize());
  prep.crop(a.crop > 0 ? a.crop : prep.crop());
  return prep;
}

// The images of `dir`, preprocessed, as one calibration batch.
torch::Tensor calibration_images(
    const std::string& dir,
    int channels,
    const resnet::Preprocess& prep) {
  std::vector<torch::Tensor> images;
  for (const auto& path : resnet::data::list_images(dir)) {
    images.push_back(
        resnet::preprocess(resnet::read_image(path, channels), prep));
  }
  if (images.empty()) {
    throw UsageError{"--calibrate: no PNG or JPEG files in " + dir + "\n", 2};
  }
  return torch::cat(images);
}

// Class names, one per line; empty if the file cannot be read.
std::vector<std::string> read_names(const std::string& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    names.push_back(line);
  }
  return names;
}

} // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  resnet::set_num_threads();
  const torch::Device device = args.device.empty()
      ? resnet::default_device()
      : resnet::parse_device(args.device);

  const bool int8_file =
      !args.weights.empty() && resnet::is_quantized_file(args.weights);
  const auto precision = choose_precision(args, int8_file, device);
  // The network as a function of a preprocessed batch, in `precision`.
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  resnet::ModelConfig config;
  if (int8_file) {
    auto net = resnet::load_quantized(args.weights);
    config = resnet::find_model_config(args.weights).value_or(config);
    config.in_channels = net.in_channels;
    config.num_classes = net.fc_weight.size(0);
    forward = resnet::CpuInference(std::move(net));
  } else {
    resnet::AnyResNet model{nullptr};
    std::tie(model, config) = load(args);
    model->to(device);
    model->eval();
    if (precision == resnet::Precision::Int8) {
      auto fused = resnet::fuse_for_inference(model);
      auto net = resnet::quantize(
          fused,
          calibration_images(
              args.calibrate,
              static_cast<int>(config.in_channels),
              preprocessing(args, config)));
      if (!args.save_int8.empty()) {
        const auto folder = std::filesystem::path(args.save_int8).parent_path();
        if (!folder.empty()) {
          std::filesystem::create_directories(folder);
        }
        resnet::save_quantized(net, args.save_int8);
        if (!resnet::find_model_config(args.save_int8)) {
          resnet::write_model_config((folder / "config.json").string(), config);
        }
      }
      forward = resnet::CpuInference(std::move(net));
    } else if (
        precision == resnet::Precision::BFloat16 && device.is_cpu() &&
        resnet::fusable(*model)) {
      forward = resnet::CpuInference(
          resnet::fuse_for_inference(model), resnet::Precision::BFloat16);
    } else if (precision == resnet::Precision::BFloat16) {
      // On a GPU, or a network that does not fuse: the network cast.
      resnet::cast_floating(*model, torch::kBFloat16);
      forward = [model](const torch::Tensor& x) mutable {
        return model->forward(x.to(torch::kBFloat16)).to(torch::kFloat);
      };
    } else {
      forward = [model](const torch::Tensor& x) mutable {
        return model->forward(x);
      };
    }
  }
  const int64_t classes = config.num_classes;
  auto names = config.label_names;
  if (names.empty()) {
    names = read_names(args.classes);
  }
  if (static_cast<int64_t>(names.size()) != classes) {
    if (!names.empty()) {
      std::cerr << "classify: " << args.classes << " has " << names.size()
                << " names for " << classes << " classes; printing indices\n";
    }
    names.clear();
  }
  const auto prep = preprocessing(args, config);
  const auto channels = static_cast<int>(config.in_channels);
  const int64_t k = std::min(args.topk, classes);
  int failures = 0;
  torch::NoGradGuard no_grad;
  for (const auto& path : args.images) {
    torch::Tensor input;
    try {
      input = resnet::preprocess(resnet::read_image(path, channels), prep)
                  .to(device);
    } catch (const c10::Error& e) {
      std::cerr << "classify: " << e.what_without_backtrace() << "\n";
      ++failures;
      continue;
    }
    const auto probs = torch::softmax(forward(input), 1)[0].cpu();
    const auto top = probs.topk(k);
    const auto values = std::get<0>(top);
    const auto indices = std::get<1>(top);
    std::cout << path << "\n";
    for (int64_t i = 0; i < k; ++i) {
      const int64_t c = indices[i].item<int64_t>();
      std::printf(
          "  %2lld. %.6f  %5lld  %s\n",
          static_cast<long long>(i + 1),
          values[i].item<double>(),
          static_cast<long long>(c),
          names.empty() ? "" : names[c].c_str());
    }
  }
  return failures == 0 ? 0 : 1;
} catch (const UsageError& u) {
  (u.code ? std::cerr : std::cout) << u.text;
  return u.code;
} catch (const c10::Error& e) {
  std::cerr << "classify: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "classify: " << e.what() << "\n";
  return 1;
}
