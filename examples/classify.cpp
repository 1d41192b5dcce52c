// Classifies image files with a ResNet checkpoint, the way torchvision's
// ImageNet models are evaluated: resize the shorter side to 256, crop the
// central 224x224, normalize, and print the top classes.
//
//   classify --weights resnet50.pth --arch resnet50 [--topk 5]
//            [--entry NAME] [--device cpu|cuda]
//            [--classes imagenet_classes.txt] [--resize 256] [--crop 224]
//            IMAGE...
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
//   find_package(PkgConfig REQUIRED)
//   pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
//   add_executable(classify classify.cpp)                   # libturbojpeg0-dev
//   target_link_libraries(classify PRIVATE resnet::resnet PNG::PNG
//                         PkgConfig::TURBOJPEG)

#include <resnet/image.h>
#include <resnet/resnet.h>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
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

const char* kUsage =
    "usage: classify --weights FILE --arch NAME [--topk K] [--entry NAME] "
    "[--device cpu|cuda] [--classes FILE] [--resize N] [--crop N] IMAGE...\n";

// A command-line problem, or --help: main prints it with the usage and
// exits with `code`.
struct UsageError {
  std::string problem;
  int code = 2;
};

[[noreturn]] void usage(const std::string& problem, int code = 2) {
  throw UsageError{problem, code};
}

int64_t to_int(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const int64_t v = std::stoll(value, &used);
    if (used == value.size() && v > 0) {
      return v;
    }
  } catch (const std::exception&) {
  }
  usage(flag + " expects a positive integer, got '" + value + "'");
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage(flag + " needs a value");
      }
      return argv[++i];
    };
    if (flag == "--weights") {
      a.weights = value();
    } else if (flag == "--entry") {
      a.entry = value();
    } else if (flag == "--arch") {
      a.arch = value();
    } else if (flag == "--device") {
      a.device = value();
    } else if (flag == "--classes") {
      a.classes = value();
    } else if (flag == "--topk") {
      a.topk = to_int(flag, value());
    } else if (flag == "--resize") {
      a.resize = to_int(flag, value());
    } else if (flag == "--crop") {
      a.crop = to_int(flag, value());
    } else if (flag == "-h" || flag == "--help") {
      usage("classifies images with a ResNet checkpoint", 0);
    } else if (flag.rfind("--", 0) == 0) {
      usage("unknown flag " + flag);
    } else {
      a.images.push_back(flag);
    }
  }
  if (a.weights.empty() || a.arch.empty() || a.images.empty()) {
    usage("--weights, --arch and at least one image are required");
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
  const Args args = parse(argc, argv);
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
  (u.code ? std::cerr : std::cout) << "classify: " << u.problem << "\n"
                                   << kUsage;
  return u.code;
} catch (const c10::Error& e) {
  std::cerr << "classify: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "classify: " << e.what() << "\n";
  return 1;
}
