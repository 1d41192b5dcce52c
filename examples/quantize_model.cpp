// Quantizes a trained network to int8 and measures what lower precision
// costs: calibrates on training images, writes the int8 network, and
// reports the test accuracy of the network in float32, in bfloat16 and in
// int8 (read back from its file), how often their top-1 agree with
// float32's, and their speed on this CPU:
//
//   quantize_model --weights runs/train/best.pt [--data DIR] [--out FILE]
//                  [--calibration 512] [--observer mse] [--json]
//
// The network is described by the config.json beside the weights (what
// train_classifier writes: architecture, channels, mean and std); the data
// are a dataset train_classifier reads (Fashion-MNIST by default). Needs
// LibTorch 2.x for int8. Builds alone with find_package(resnet) and CLI11,
// linking resnet::resnet CLI11::CLI11 ZLIB::ZLIB PNG::PNG libturbojpeg.

#include <resnet/data/datasets.h>
#include <resnet/data/loader.h>
#include <resnet/data/prepare.h>
#include <resnet/io/model_config.h>
#include <resnet/model/config.h>
#include <resnet/resnet.h>
#include <resnet/train/progress.h>

#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <vector>

namespace rd = resnet::data;

namespace {

struct Args {
  std::string weights, data = "/usr/share/datasets/fashion-mnist", dataset;
  std::string out, observer = "mse";
  int64_t calibration = 512, batch_size = 256, threads = 0, test_limit = 0;
  uint64_t seed = 0;
  bool json = false;
};

struct UsageError {
  std::string text;
  int code = 2;
};

Args parse_args(int argc, char** argv) {
  Args a;
  CLI::App app("Quantizes a trained ResNet to int8.", "quantize_model");
  app.option_defaults()->always_capture_default();
  const auto count = CLI::Range(int64_t{1}, int64_t{1} << 40);
  app.add_option("--weights", a.weights, "with config.json beside it")
      ->required();
  app.add_option("--data", a.data, "the dataset's folder");
  app.add_option("--dataset", a.dataset, "(default: told from the files)")
      ->check(CLI::IsMember(rd::dataset_kinds()));
  app.add_option("--out", a.out, "(default: model.int8.safetensors beside)");
  app.add_option("--calibration", a.calibration, "training images")
      ->check(count);
  app.add_option("--observer", a.observer, "activation ranges")
      ->check(CLI::IsMember({"mse", "percentile", "minmax"}));
  app.add_option("--batch-size", a.batch_size, "")->check(count);
  app.add_option("--threads", a.threads, "0: OMP_NUM_THREADS")
      ->check(CLI::Range(0, 4096));
  app.add_option("--test-limit", a.test_limit, "the first N test images")
      ->check(count);
  app.add_option("--seed", a.seed, "which training images calibrate");
  app.add_flag("--json", a.json, "one JSON object");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    throw UsageError{out.str() + err.str(), code == 0 ? 0 : 2};
  }
  return a;
}

// Accuracy of a network over a split, and its top-1 answers.
struct Evaluation {
  double accuracy = 0, images_per_second = 0;
  torch::Tensor predictions;
};

Evaluation evaluate(
    const rd::ImageDataset& split,
    const rd::BatchPreparation& prepare,
    int64_t batch_size,
    const std::function<torch::Tensor(const torch::Tensor&)>& net) {
  rd::Loader loader(
      split, rd::LoaderOptions().batch_size(batch_size).shuffle(false));
  loader.start_epoch(0);
  std::vector<torch::Tensor> predictions;
  int64_t right = 0, total = 0;
  double seconds = 0;
  while (auto b = loader.next()) {
    const auto x = prepare(*b, false).first;
    const auto start = std::chrono::steady_clock::now();
    const auto top1 = net(x).argmax(1);
    seconds += resnet::seconds_since(start);
    right += top1.eq(b->targets).sum().item<int64_t>();
    total += top1.size(0);
    predictions.push_back(top1);
  }
  return {
      static_cast<double>(right) /
          static_cast<double>(std::max<int64_t>(total, 1)),
      static_cast<double>(total) / std::max(seconds, 1e-9),
      torch::cat(predictions)};
}

} // namespace

int main(int argc, char** argv) try {
  const auto a = parse_args(argc, argv);
  resnet::set_num_threads(static_cast<int>(a.threads));
  const auto config = resnet::find_model_config(a.weights);
  if (!config) {
    throw UsageError{"there is no config.json beside " + a.weights + "\n", 2};
  }
  auto model = resnet::create(*config);
  resnet::load_state_dict(*model, a.weights);
  model->eval();
  auto fused = resnet::fuse_for_inference(*model);

  auto data =
      rd::open_dataset(
          a.data, a.dataset, rd::ImageFolderOptions().size(config->input_size))
          .head(0, a.test_limit);
  rd::BatchPreparation prepare;
  prepare.mean = config->preprocess.mean();
  prepare.std = config->preprocess.std();
  prepare.classes = config->num_classes;
  TORCH_CHECK(
      static_cast<int64_t>(prepare.mean.size()) == data.train.channels(),
      "the network takes ",
      prepare.mean.size(),
      "-channel images, the data have ",
      data.train.channels());

  // Calibration: the first --calibration images of a seeded shuffle.
  rd::Loader calibration_loader(
      data.train, rd::LoaderOptions().batch_size(a.calibration).seed(a.seed));
  calibration_loader.start_epoch(0);
  const auto calibration = prepare(*calibration_loader.next(), false).first;
  const auto start = std::chrono::steady_clock::now();
  auto int8 = resnet::quantize(
      fused, calibration, resnet::QuantizeOptions().observer(a.observer));
  const double calibration_seconds = resnet::seconds_since(start);
  const auto out = !a.out.empty()
      ? a.out
      : (std::filesystem::path(a.weights).parent_path() /
         "model.int8.safetensors")
            .string();
  if (const auto folder = std::filesystem::path(out).parent_path();
      !folder.empty()) {
    std::filesystem::create_directories(folder);
  }
  resnet::save_quantized(int8, out);
  using resnet::Precision;
  const resnet::CpuInference nets[] = {
      {fused, Precision::Float32},
      {resnet::fuse_for_inference(*model), Precision::BFloat16},
      resnet::CpuInference(resnet::load_quantized(out))};
  std::vector<Evaluation> results;
  for (const auto& net : nets) {
    results.push_back(evaluate(data.test, prepare, a.batch_size, net));
  }
  const auto& fp32 = results[0];
  const auto agreement = [&](const Evaluation& e) {
    return e.predictions.eq(fp32.predictions)
        .to(torch::kDouble)
        .mean()
        .item<double>();
  };
  const auto test_images = fp32.predictions.size(0);
  const auto features = resnet::cpu_features().to_string();
  if (a.json) {
    std::cout << std::setprecision(6) << "{\"architecture\": \""
              << config->architecture << "\", \"test_images\": " << test_images
              << ", \"calibration_images\": " << calibration.size(0)
              << ", \"observer\": \"" << a.observer << "\"";
    for (size_t i = 0; i < results.size(); ++i) {
      const std::string p = resnet::to_string(nets[i].precision());
      std::cout << ", \"" << p << "_accuracy\": " << results[i].accuracy
                << ", \"" << p << "_top1_agreement\": " << agreement(results[i])
                << ", \"" << p
                << "_images_per_second\": " << results[i].images_per_second;
    }
    std::cout << ", \"cpu_features\": \"" << features << "\", \"out\": \""
              << out << "\"}\n";
  } else {
    std::cout << std::fixed << std::setprecision(2) << config->architecture
              << " on " << test_images << " test images (" << data.kind
              << "), calibrated on " << calibration.size(0)
              << " training images (" << a.observer << ", "
              << calibration_seconds << " s); CPU: " << features << "\n";
    for (size_t i = 0; i < results.size(); ++i) {
      std::cout << "  " << resnet::to_string(nets[i].precision()) << "  "
                << 100 * results[i].accuracy << "%, top-1 as float32's "
                << 100 * agreement(results[i]) << "%, "
                << results[i].images_per_second << " images/s\n";
    }
    std::cout << "int8 network in " << out << "\n";
  }
  return 0;
} catch (const UsageError& u) {
  (u.code ? std::cerr : std::cout)
      << (u.code ? "quantize_model: " : "") << u.text;
  return u.code;
} catch (const std::exception& e) {
  std::cerr << "quantize_model: " << resnet::error_message(e) << "\n";
  return 1;
}
