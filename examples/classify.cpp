// Classifies image files with a ResNet checkpoint, the way torchvision's
// ImageNet models are evaluated: resize the shorter side to 256, crop the
// central 224x224, normalize, and print the top classes.
//
//   classify --weights resnet50.pth --arch resnet50 [--topk 5]
//            [--entry NAME] [--device cpu|cuda]
//            [--classes imagenet_classes.txt] [--resize 256] [--crop 224]
//            IMAGE...   (--help lists the flags)
//
// The weights are any file resnet::load_state_dict reads: torchvision's
// published .pth files, timm's model.safetensors or .pth, a training
// checkpoint (the state dict is found under its usual names, or named with
// --entry, e.g. --entry model_ema), a TorchScript archive, or a file from
// resnet::save_state_dict. The architecture is any name of
// resnet::architectures(), torchvision's or timm's (resnet50d,
// seresnext50_32x4d, ...). Its number of classes is read from `fc.weight`.
// Class names: one per line, in class order (examples/data/imagenet_classes.txt
// for ImageNet).
//
// Build it alone against an installed resnet package:
//   find_package(resnet CONFIG REQUIRED)
//   find_package(PNG REQUIRED)                              # libpng-dev
//   find_package(CLI11 CONFIG REQUIRED)                     # libcli11-dev
//   find_package(PkgConfig REQUIRED)
//   pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
//   add_executable(classify classify.cpp)                   # libturbojpeg0-dev
//   target_link_libraries(classify PRIVATE resnet::resnet PNG::PNG
//                         PkgConfig::TURBOJPEG CLI11::CLI11)

#include <resnet/data/image.h>
#include <resnet/data/transforms.h>
#include <resnet/resnet.h>

#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
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
  std::string weights;
  std::string entry;
  std::string arch;
  std::string device;
  std::string classes = RESNET_CLASSES_FILE;
  int64_t topk = 5;
  int64_t resize = 256;
  int64_t crop = 224;
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
  app.add_option("--weights", a.weights, "checkpoint or weights file")
      ->required();
  app.add_option("--arch", a.arch, "any of resnet::architectures()")
      ->required();
  app.add_option("--topk", a.topk, "classes printed per image")
      ->check(positive);
  app.add_option("--entry", a.entry, "the state dict's name in a checkpoint");
  app.add_option(
      "--device", a.device, "cpu, cuda or cuda:N (default: cuda if any)");
  app.add_option("--classes", a.classes, "class names, one per line");
  app.add_option("--resize", a.resize, "shorter side resized to N")
      ->check(positive);
  app.add_option("--crop", a.crop, "central NxN crop")->check(positive);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    throw UsageError{out.str() + err.str(), code == 0 ? 0 : 2};
  }
  return a;
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

  // The checkpoint says how many classes the model has.
  const auto state = resnet::read_state_dict(args.weights, args.entry);
  int64_t classes = 0;
  for (const auto& item : state) {
    const auto& name = item.first;
    if (name.size() >= 9 &&
        name.compare(name.size() - 9, 9, "fc.weight") == 0) {
      classes = item.second.size(0);
    }
  }
  if (classes == 0) {
    throw std::runtime_error("'" + args.weights + "' has no fc.weight");
  }
  auto model =
      resnet::create(args.arch, resnet::ResNetOptions().num_classes(classes));
  resnet::load_state_dict(*model, state, {}, "'" + args.weights + "'");
  model->to(device);
  model->eval();

  auto names = read_names(args.classes);
  if (static_cast<int64_t>(names.size()) != classes) {
    if (!names.empty()) {
      std::cerr << "classify: " << args.classes << " has " << names.size()
                << " names for " << classes << " classes; printing indices\n";
    }
    names.clear();
  }

  const auto prep =
      resnet::PreprocessOptions().resize(args.resize).crop(args.crop);
  const int64_t k = std::min(args.topk, classes);
  int failures = 0;
  torch::NoGradGuard no_grad;
  for (const auto& path : args.images) {
    torch::Tensor input;
    try {
      input = resnet::preprocess(resnet::read_image(path), prep).to(device);
    } catch (const c10::Error& e) {
      std::cerr << "classify: " << e.what_without_backtrace() << "\n";
      ++failures;
      continue;
    }
    const auto probs = torch::softmax(model->forward(input), 1)[0].cpu();
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
