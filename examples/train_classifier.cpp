// Trains a ResNet image classifier and evaluates it.
//
//   train_classifier [--data DIR] [--dataset
//   fashion-mnist|mnist|cifar10|folder]
//                    [--arch resnet20] [--epochs 5] [--batch-size 128] [--lr
//                    0.1]
//                    [--device cpu|cuda] [--threads N] [--seed 0] [--out DIR]
//                    [--resume] [--train-limit N] ...      (--help lists all)
//
// Data: Fashion-MNIST as Debian's dataset-fashion-mnist installs it (the
// default, /usr/share/datasets/fashion-mnist), any folder of MNIST-format IDX
// files (gzipped or not), the CIFAR-10 binary version (data_batch_*.bin), or
// an image folder DIR/train/<class>/*.png and DIR/test/<class>/*.png.
//
// It writes into --out: metrics.csv (one row per epoch), curves.png (loss and
// accuracy, drawn by gnuplot when installed), best.pt and last.pt (weights,
// readable by resnet::load_state_dict and by Python's torch.load), the
// optimizer state and progress for --resume, and summary.json. Ctrl-C saves a
// checkpoint first; --resume continues exactly where it stopped.
//
// Build it alone against an installed resnet package:
//   find_package(resnet CONFIG REQUIRED)
//   find_package(ZLIB REQUIRED)                             # zlib1g-dev
//   find_package(PNG REQUIRED)                              # libpng-dev
//   find_package(PkgConfig REQUIRED)
//   pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
//   add_executable(train_classifier train_classifier.cpp)   # libturbojpeg0-dev
//   target_link_libraries(train_classifier PRIVATE resnet::resnet ZLIB::ZLIB
//                         PNG::PNG PkgConfig::TURBOJPEG)

#include <resnet/data/cifar.h>
#include <resnet/data/idx.h>
#include <resnet/image.h>
#include <resnet/resnet.h>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------- options --

struct Args {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string dataset; // guessed from the folder when empty
  std::string arch = "resnet20";
  std::string stem = "auto";
  std::string device;
  std::string out = "runs/train";
  int64_t epochs = 5;
  int64_t batch_size = 128;
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;
  double warmup_epochs = 1;
  double label_smoothing = 0.1;
  double erasing = 0.25;
  int64_t pad = 4;
  bool flip = true;
  bool augment = true;
  int threads = 0;
  uint64_t seed = 0;
  bool resume = false;
  int64_t train_limit = 0;
  int64_t test_limit = 0;
  int64_t stop_after = 0;
  int64_t image_size = 0;
};

const char* kUsage = R"(usage: train_classifier [options]
  --data DIR             dataset folder (default /usr/share/datasets/fashion-mnist)
  --dataset NAME         fashion-mnist | mnist | cifar10 | folder (default: guessed)
  --arch NAME            any of resnet::architectures() (default resnet20)
  --stem auto|cifar|imagenet   auto: cifar for images up to 64 pixels
  --epochs N             (default 5)
  --batch-size N         (default 128)
  --lr X                 peak learning rate (default 0.1)
  --momentum X           (default 0.9)        --no-nesterov
  --weight-decay X       (default 5e-4)
  --warmup-epochs X      linear warm-up before the cosine decay (default 1)
  --label-smoothing X    (default 0.1)
  --erasing P            random-erasing probability (default 0.25)
  --pad N                random-crop padding (default 4)
  --no-flip              no horizontal flips (the default for mnist)
  --no-augment           none of crop, flip, erasing
  --image-size N         folder datasets: resize and crop images to N x N
  --device cpu|cuda      (default: cuda when available)
  --threads N            CPU threads (default: OMP_NUM_THREADS or all cores)
  --seed N               (default 0)
  --out DIR              output folder (default runs/train)
  --resume               continue from DIR/last.pt and its state
  --train-limit N        use only the first N training images
  --test-limit N         use only the first N test images
  --stop-after N         stop after N steps in this run, as Ctrl-C does
)";

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
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage(flag + " needs a value");
      }
      return argv[++i];
    };
    const auto number = [&](double lo) {
      const std::string v = next();
      try {
        size_t used = 0;
        const double x = std::stod(v, &used);
        if (used == v.size() && x >= lo) {
          return x;
        }
      } catch (const std::exception&) {
      }
      usage(
          flag + " expects a number >= " + std::to_string(lo) + ", got '" + v +
          "'");
    };
    const auto integer = [&](int64_t lo) {
      const double x = number(static_cast<double>(lo));
      if (x != std::floor(x) || x > 1e15) {
        usage(flag + " expects a whole number up to 10^15");
      }
      return static_cast<int64_t>(x);
    };
    if (flag == "--data")
      a.data = next();
    else if (flag == "--dataset")
      a.dataset = next();
    else if (flag == "--arch")
      a.arch = next();
    else if (flag == "--stem")
      a.stem = next();
    else if (flag == "--device")
      a.device = next();
    else if (flag == "--out")
      a.out = next();
    else if (flag == "--epochs")
      a.epochs = integer(1);
    else if (flag == "--batch-size")
      a.batch_size = integer(1);
    else if (flag == "--lr")
      a.lr = number(0);
    else if (flag == "--momentum")
      a.momentum = number(0);
    else if (flag == "--no-nesterov")
      a.nesterov = false;
    else if (flag == "--weight-decay")
      a.weight_decay = number(0);
    else if (flag == "--warmup-epochs")
      a.warmup_epochs = number(0);
    else if (flag == "--label-smoothing")
      a.label_smoothing = number(0);
    else if (flag == "--erasing")
      a.erasing = number(0);
    else if (flag == "--pad")
      a.pad = integer(0);
    else if (flag == "--no-flip")
      a.flip = false;
    else if (flag == "--no-augment")
      a.augment = false;
    else if (flag == "--image-size")
      a.image_size = integer(1);
    else if (flag == "--threads")
      a.threads = static_cast<int>(integer(1));
    else if (flag == "--seed")
      a.seed = static_cast<uint64_t>(integer(0));
    else if (flag == "--resume")
      a.resume = true;
    else if (flag == "--train-limit")
      a.train_limit = integer(1);
    else if (flag == "--test-limit")
      a.test_limit = integer(1);
    else if (flag == "--stop-after")
      a.stop_after = integer(1);
    else if (flag == "-h" || flag == "--help") {
      usage("", 0);
    } else {
      usage("unknown argument '" + flag + "'");
    }
  }
  if (a.stem != "auto" && a.stem != "cifar" && a.stem != "imagenet") {
    usage("--stem expects auto, cifar or imagenet, got '" + a.stem + "'");
  }
  if (a.threads > 4096) {
    usage("--threads expects at most 4096");
  }
  if (a.erasing > 1 || a.label_smoothing >= 1) {
    usage("--erasing must be <= 1 and --label-smoothing < 1");
  }
  return a;
}

// ------------------------------------------------------------------- data --

// A labelled image set held in memory as 8-bit pixels.
struct Split {
  torch::Tensor images; // [N, C, H, W] uint8
  torch::Tensor labels; // [N] int64
};

struct Dataset {
  std::string name;
  std::vector<std::string> classes;
  Split train, test;
};

[[noreturn]] void data_error(const std::string& path, const std::string& what) {
  throw std::runtime_error("dataset '" + path + "': " + what);
}

// The first of `names` (with or without .gz) that exists in `dir`.
fs::path find_file(const fs::path& dir, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    for (const auto& candidate : {dir / n, dir / (n + ".gz")}) {
      if (fs::is_regular_file(candidate)) {
        return candidate;
      }
    }
  }
  data_error(dir.string(), "expected a file named " + names.front() + "[.gz]");
}

// A pair of IDX files (the MNIST format): images [N, H, W] and labels [N].
Split read_idx(const fs::path& images_path, const fs::path& labels_path) {
  auto images = resnet::data::read_idx(images_path.string());
  auto labels = resnet::data::read_idx(labels_path.string());
  if (images.dim() != 3 || images.scalar_type() != torch::kByte) {
    data_error(images_path.string(), "expected 8-bit images [N, H, W]");
  }
  if (labels.dim() != 1 || labels.size(0) != images.size(0)) {
    data_error(
        labels_path.string(),
        "expected " + std::to_string(images.size(0)) +
            " labels to match the images");
  }
  return {images.unsqueeze(1), labels.to(torch::kLong)};
}

Dataset load_idx(const fs::path& dir, const std::string& name) {
  Dataset d;
  d.name = name;
  d.train = read_idx(
      find_file(dir, {"train-images-idx3-ubyte", "train-images.idx3-ubyte"}),
      find_file(dir, {"train-labels-idx1-ubyte", "train-labels.idx1-ubyte"}));
  d.test = read_idx(
      find_file(dir, {"t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"}),
      find_file(dir, {"t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"}));
  if (name == "fashion-mnist") {
    d.classes = {
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot"};
  } else {
    for (int i = 0; i < 10; ++i) {
      d.classes.push_back(std::to_string(i));
    }
  }
  return d;
}

// CIFAR-10's binary version: records of 1 label byte and 3x32x32 pixels.
Split read_cifar(const std::vector<fs::path>& files) {
  const auto data = resnet::data::read_cifar(
      std::vector<std::string>(files.begin(), files.end()),
      resnet::data::Cifar::Ten);
  return {data.images, data.targets};
}

Dataset load_cifar(fs::path dir) {
  if (fs::is_directory(dir / "cifar-10-batches-bin")) {
    dir /= "cifar-10-batches-bin";
  }
  std::vector<fs::path> train;
  for (int i = 1; i <= 5; ++i) {
    const auto f = dir / ("data_batch_" + std::to_string(i) + ".bin");
    if (fs::is_regular_file(f)) {
      train.push_back(f);
    }
  }
  if (train.empty()) {
    data_error(dir.string(), "expected data_batch_1.bin ... data_batch_5.bin");
  }
  Dataset d;
  d.name = "cifar10";
  d.train = read_cifar(train);
  d.test = read_cifar({find_file(dir, {"test_batch.bin"})});
  d.classes = {
      "airplane",
      "automobile",
      "bird",
      "cat",
      "deer",
      "dog",
      "frog",
      "horse",
      "ship",
      "truck"};
  return d;
}

// DIR/<class>/<image> for every class of `classes` (sorted names).
Split read_folder(
    const fs::path& dir,
    const std::vector<std::string>& classes,
    int64_t size,
    int channels) {
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<fs::path> files;
    if (fs::is_directory(dir / classes[c])) {
      for (const auto& e : fs::directory_iterator(dir / classes[c])) {
        if (e.is_regular_file()) {
          files.push_back(e.path());
        }
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      auto img = resnet::read_image(f.string(), channels);
      if (img.size(1) != size || img.size(2) != size) {
        img = resnet::center_crop(resnet::resize_shorter_side(img, size), size)
                  .round()
                  .clamp(0, 255)
                  .to(torch::kByte);
      }
      images.push_back(img);
      labels.push_back(static_cast<int64_t>(c));
    }
  }
  if (images.empty()) {
    data_error(
        dir.string(), "expected images in " + dir.string() + "/<class>/");
  }
  return {torch::stack(images), torch::tensor(labels, torch::kLong)};
}

Dataset load_folder(const fs::path& dir, int64_t size) {
  const fs::path train = dir / "train";
  const fs::path test =
      fs::is_directory(dir / "test") ? dir / "test" : dir / "val";
  if (!fs::is_directory(train) || !fs::is_directory(test)) {
    data_error(
        dir.string(),
        "expected sub-folders train/ and test/ (or val/), "
        "each with one folder per class");
  }
  Dataset d;
  d.name = "folder";
  for (const auto& e : fs::directory_iterator(train)) {
    if (e.is_directory()) {
      d.classes.push_back(e.path().filename().string());
    }
  }
  std::sort(d.classes.begin(), d.classes.end());
  if (d.classes.size() < 2) {
    data_error(train.string(), "expected at least two class folders");
  }
  // Size and channels of the first image decide for all.
  fs::path first;
  for (const auto& e : fs::recursive_directory_iterator(train)) {
    if (e.is_regular_file() && (first.empty() || e.path() < first)) {
      first = e.path();
    }
  }
  if (first.empty()) {
    data_error(train.string(), "has no image files");
  }
  const auto probe = resnet::read_image(first.string(), 0);
  const int channels = probe.size(0) >= 3 ? 3 : 1;
  if (size == 0) {
    size = std::min(probe.size(1), probe.size(2));
  }
  d.train = read_folder(train, d.classes, size, channels);
  d.test = read_folder(test, d.classes, size, channels);
  return d;
}

std::string guess_dataset(const fs::path& dir) {
  if (!fs::is_directory(dir)) {
    data_error(dir.string(), "no such folder");
  }
  for (const char* f :
       {"train-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz",
        "train-images.idx3-ubyte"}) {
    if (fs::exists(dir / f)) {
      return dir.string().find("fashion") != std::string::npos ? "fashion-mnist"
                                                               : "mnist";
    }
  }
  if (fs::exists(dir / "data_batch_1.bin") ||
      fs::exists(dir / "cifar-10-batches-bin" / "data_batch_1.bin")) {
    return "cifar10";
  }
  if (fs::is_directory(dir / "train")) {
    return "folder";
  }
  data_error(
      dir.string(),
      "cannot tell the format: expected MNIST IDX files, CIFAR-10 "
      "data_batch_*.bin, or train/ and test/ image folders "
      "(or say --dataset)");
}

Dataset load_dataset(const Args& args) {
  const std::string kind =
      args.dataset.empty() ? guess_dataset(args.data) : args.dataset;
  if (!fs::is_directory(args.data)) {
    data_error(args.data, "no such folder");
  }
  Dataset d;
  if (kind == "fashion-mnist" || kind == "mnist") {
    d = load_idx(args.data, kind);
  } else if (kind == "cifar10") {
    d = load_cifar(args.data);
  } else if (kind == "folder") {
    d = load_folder(args.data, args.image_size);
  } else {
    usage(
        "--dataset expects fashion-mnist, mnist, cifar10 or folder, got '" +
        kind + "'");
  }
  for (auto* s : {&d.train, &d.test}) {
    const auto max_label = s->labels.max().item<int64_t>();
    if (s->labels.min().item<int64_t>() < 0 ||
        max_label >= static_cast<int64_t>(d.classes.size())) {
      data_error(
          args.data,
          "label " + std::to_string(max_label) + " out of range for " +
              std::to_string(d.classes.size()) + " classes");
    }
  }
  if (args.train_limit > 0 && args.train_limit < d.train.images.size(0)) {
    d.train = {
        d.train.images.slice(0, 0, args.train_limit),
        d.train.labels.slice(0, 0, args.train_limit)};
  }
  if (args.test_limit > 0 && args.test_limit < d.test.images.size(0)) {
    d.test = {
        d.test.images.slice(0, 0, args.test_limit),
        d.test.labels.slice(0, 0, args.test_limit)};
  }
  return d;
}

// ----------------------------------------------------------- augmentation --

// Seeds derived from (seed, epoch, batch), so that any step can be replayed.
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    order[static_cast<size_t>(i)] = i;
  }
  std::mt19937_64 rng(mix(seed, static_cast<uint64_t>(epoch)));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// Normalized float images; in training, random crops of the zero-padded
// image, horizontal flips and random erasing.
torch::Tensor make_batch(
    const torch::Tensor& pixels,
    const torch::Tensor& mean,
    const torch::Tensor& std,
    const Args& args,
    bool train,
    uint64_t batch_seed) {
  auto x = (pixels.to(torch::kFloat) / 255.0 - mean) / std;
  if (!train || !args.augment) {
    return x;
  }
  std::mt19937_64 rng(batch_seed);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), p = args.pad;
  std::uniform_real_distribution<double> unit(0, 1);
  std::uniform_int_distribution<int64_t> shift(0, 2 * p);
  auto padded = p > 0 ? torch::constant_pad_nd(x, {p, p, p, p}, 0) : x;
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto img = padded[i].narrow(1, shift(rng), h).narrow(2, shift(rng), w);
    if (args.flip && unit(rng) < 0.5) {
      img = img.flip({2});
    }
    if (unit(rng) < args.erasing) {
      // A rectangle of 2-25% of the area, aspect 0.3-3.3, set to zero (the
      // mean after normalization).
      const double area = h * w * (0.02 + 0.23 * unit(rng));
      const double aspect =
          std::exp(std::log(0.3) + (std::log(3.3) - std::log(0.3)) * unit(rng));
      const int64_t eh =
          std::min<int64_t>(h, std::llround(std::sqrt(area * aspect)));
      const int64_t ew =
          std::min<int64_t>(w, std::llround(std::sqrt(area / aspect)));
      if (eh > 0 && ew > 0) {
        img = img.clone();
        const auto top = std::uniform_int_distribution<int64_t>(0, h - eh)(rng);
        const auto left =
            std::uniform_int_distribution<int64_t>(0, w - ew)(rng);
        img.narrow(1, top, eh).narrow(2, left, ew).zero_();
      }
    }
    out.push_back(img);
  }
  return torch::stack(out);
}

// ------------------------------------------------------------ reporting --

std::atomic<bool> interrupted{false};

extern "C" void on_sigint(int) {
  interrupted = true;
  std::signal(SIGINT, SIG_DFL); // a second Ctrl-C ends the program at once
}

std::string clock_time(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream o;
  o << s / 60 << ":" << std::setw(2) << std::setfill('0') << s % 60;
  return o.str();
}

// One line per epoch that redraws itself on a terminal, and that prints at
// a few milestones when the output is a log file.
class Progress {
 public:
  Progress(bool enabled, int64_t epoch, int64_t epochs, int64_t steps)
      : enabled_(enabled),
        epoch_(epoch),
        epochs_(epochs),
        steps_(steps),
        start_(std::chrono::steady_clock::now()) {
#if defined(__unix__) || defined(__APPLE__)
    tty_ = isatty(fileno(stdout)) != 0;
#endif
  }

  void update(int64_t step, double loss, double acc, int64_t images) {
    if (!enabled_) {
      return;
    }
    const double elapsed = seconds();
    const bool last = step == steps_;
    const int64_t milestone = std::max<int64_t>(1, steps_ / 4);
    if (!tty_ && !last && step % milestone != 0) {
      return;
    }
    constexpr int kWidth = 24;
    const int filled =
        static_cast<int>(kWidth * step / std::max<int64_t>(1, steps_));
    std::ostringstream line;
    line << "epoch " << epoch_ << "/" << epochs_ << " ["
         << std::string(filled, '#') << std::string(kWidth - filled, '.')
         << "] " << step << "/" << steps_ << std::fixed << std::setprecision(4)
         << " loss " << loss << std::setprecision(2) << " acc " << 100 * acc
         << "% " << std::setprecision(0) << images / std::max(elapsed, 1e-9)
         << " img/s ETA "
         << clock_time(elapsed / std::max<int64_t>(1, step) * (steps_ - step));
    std::cout << (tty_ ? "\r" : "") << line.str() << (tty_ && !last ? "" : "\n")
              << std::flush;
  }

  double seconds() const {
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  bool enabled_;
  bool tty_ = false;
  int64_t epoch_, epochs_, steps_;
  std::chrono::steady_clock::time_point start_;
};

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out + "\"";
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  resnet::write_file_atomically(
      path.string(), std::vector<char>(text.begin(), text.end()));
}

// Loss and accuracy curves with gnuplot, if it is installed.
void plot_curves(const fs::path& dir) {
  const auto script = dir / "curves.gnuplot";
  std::ofstream(script)
      << "set terminal png size 1000,420\n"
      << "set output '" << (dir / "curves.png").string() << "'\n"
      << "set datafile separator ','\n"
      << "set key autotitle columnhead\n"
      << "set multiplot layout 1,2\n"
      << "set xlabel 'epoch'\nset title 'loss'\n"
      << "plot '" << (dir / "metrics.csv").string()
      << "' using 1:3 with linespoints title 'train', '' using 1:5 "
         "with linespoints title 'test'\n"
      << "set title 'accuracy (%)'\n"
      << "plot '" << (dir / "metrics.csv").string()
      << "' using 1:($4*100) with linespoints title 'train', '' "
         "using 1:($6*100) with linespoints title 'test'\n"
      << "unset multiplot\n";
  const std::string cmd = "gnuplot '" + script.string() + "' 2>/dev/null";
  static bool warned = false;
  if (std::system(cmd.c_str()) != 0 && !warned) {
    std::cerr << "train_classifier: no curves.png (is gnuplot installed?)\n";
    warned = true;
  }
}

// ------------------------------------------------------- checkpointing --

// Where a run stands. A checkpoint is the model and optimizer files of one
// step in DIR/checkpoint/, then DIR/last_state.json naming that step: the
// state file is replaced last, so a process killed at any moment leaves the
// previous complete checkpoint in force.
struct RunState {
  int64_t step = 0; // optimizer steps done
  double best_accuracy = -1;
  double epoch_loss = 0; // sums over the current epoch so far
  int64_t epoch_correct = 0;
  int64_t epoch_seen = 0;
  double seconds = 0; // training time so far
};

// The crash-safety test's hook: TRAIN_CLASSIFIER_CRASH_AT=step:N kills the
// process (SIGKILL) after optimizer step N; checkpoint:K:model,
// checkpoint:K:optimizer or checkpoint:K:state kills it during this run's
// K-th checkpoint, after that file is written (for the state file: before
// its temporary copy is renamed into place).
void crash_point(const std::string& name) {
  static const char* at = std::getenv("TRAIN_CLASSIFIER_CRASH_AT");
  if (at != nullptr && name == at) {
    std::cout << std::flush;
    std::raise(SIGKILL);
  }
}

std::string step_file(const fs::path& dir, const char* kind, int64_t step) {
  return (dir / "checkpoint" /
          (kind + std::string("-") + std::to_string(step) + ".pt"))
      .string();
}

void save_checkpoint(
    const fs::path& dir,
    resnet::AnyResNet& model,
    torch::optim::SGD& optimizer,
    const RunState& st,
    const Args& args,
    const std::string& dataset) {
  static int64_t count = 0;
  const std::string hook = "checkpoint:" + std::to_string(++count) + ":";
  fs::create_directories(dir / "checkpoint");
  const auto model_file = step_file(dir, "model", st.step);
  resnet::save_state_dict(*model, model_file);
  crash_point(hook + "model");
  std::ostringstream optimizer_bytes;
  torch::save(optimizer, optimizer_bytes);
  resnet::write_file_atomically(
      step_file(dir, "optimizer", st.step), optimizer_bytes.str());
  crash_point(hook + "optimizer");
  const nlohmann::json j = {
      {"step", st.step},
      {"best_accuracy", st.best_accuracy},
      {"epoch_loss", st.epoch_loss},
      {"epoch_correct", st.epoch_correct},
      {"epoch_seen", st.epoch_seen},
      {"seconds", st.seconds},
      {"arch", args.arch},
      {"dataset", dataset},
      {"seed", args.seed},
      {"batch_size", args.batch_size},
      {"epochs", args.epochs}};
  const std::string text = j.dump(2) + "\n";
  resnet::StagedFile state(
      (dir / "last_state.json").string(), text.data(), text.size());
  crash_point(hook + "state");
  state.commit();
  // last.pt: the same weights under a stable name (a hard link where the
  // file system has them), replaced atomically.
  const auto last_tmp = dir / "last.pt.tmp";
  fs::remove(last_tmp);
  std::error_code linked;
  fs::create_hard_link(model_file, last_tmp, linked);
  if (linked) {
    fs::copy_file(model_file, last_tmp);
  }
  fs::rename(last_tmp, dir / "last.pt");
  // Files of other steps (older checkpoints, or a newer one that a crash
  // left unnamed) are no longer needed.
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(dir / "checkpoint")) {
    const auto name = e.path().string();
    if (name != model_file && name != step_file(dir, "optimizer", st.step)) {
      stale.push_back(e.path());
    }
  }
  for (const auto& f : stale) {
    fs::remove(f);
  }
}

// Temporary files that a killed run left behind in `dir`.
void remove_temporaries(const fs::path& dir) {
  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp") != std::string::npos) {
      found.push_back(e.path());
    }
  }
  for (const auto& f : found) {
    fs::remove(f);
  }
}

// Keeps the rows of a CSV log whose first column is at most `last`: what a
// run killed after its checkpoint wrote is written again when it resumes.
void truncate_log(const fs::path& path, int64_t last) {
  if (!fs::exists(path)) {
    return;
  }
  std::ifstream in(path);
  std::string text, line;
  for (bool header = true; std::getline(in, line); header = false) {
    char* end = nullptr;
    const long long first = std::strtoll(line.c_str(), &end, 10);
    if (header || (end != line.c_str() && *end == ',' && first <= last)) {
      text += line + "\n";
    }
  }
  in.close();
  resnet::write_file_atomically(path.string(), text);
}

// The run state of the checkpoint in `dir`, loaded into `model` and
// `optimizer`; nullopt when there is none yet.
std::optional<RunState> load_checkpoint(
    const fs::path& dir,
    resnet::AnyResNet& model,
    torch::optim::SGD& optimizer,
    const Args& args,
    const std::string& dataset) {
  const auto path = dir / "last_state.json";
  if (!fs::exists(path)) {
    return std::nullopt;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(std::ifstream(path));
    const auto expect = [&](const char* key, const nlohmann::json& value) {
      if (j.at(key) != value) {
        throw std::runtime_error(
            "cannot resume: the run in " + dir.string() + " has " + key + " " +
            j.at(key).dump() + ", this one " + value.dump());
      }
    };
    expect("arch", args.arch);
    expect("dataset", dataset);
    expect("seed", args.seed);
    expect("batch_size", args.batch_size);
    RunState st;
    st.step = j.at("step").get<int64_t>();
    st.best_accuracy = j.at("best_accuracy").get<double>();
    st.epoch_loss = j.at("epoch_loss").get<double>();
    st.epoch_correct = j.at("epoch_correct").get<int64_t>();
    st.epoch_seen = j.at("epoch_seen").get<int64_t>();
    st.seconds = j.at("seconds").get<double>();
    resnet::load_state_dict(*model, step_file(dir, "model", st.step));
    torch::load(optimizer, step_file(dir, "optimizer", st.step));
    return st;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(
        "cannot resume: " + path.string() + " is damaged: " + e.what());
  }
}

// ------------------------------------------------------------ the model --

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  torch::Tensor confusion; // [true class, predicted class]
};

Evaluation evaluate(
    resnet::AnyResNet& model,
    const Split& split,
    const torch::Tensor& mean,
    const torch::Tensor& std,
    const Args& args,
    torch::Device device,
    int64_t classes,
    bool cuda_fast) {
  model->eval();
  torch::NoGradGuard no_grad;
  Evaluation e;
  e.confusion = torch::zeros({classes, classes}, torch::kLong);
  const int64_t n = split.images.size(0);
  const int64_t bs = std::max<int64_t>(args.batch_size, 256);
  for (int64_t i = 0; i < n; i += bs) {
    const int64_t m = std::min(bs, n - i);
    auto x =
        make_batch(split.images.slice(0, i, i + m), mean, std, args, false, 0)
            .to(device);
    if (cuda_fast) {
      x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    const auto y = split.labels.slice(0, i, i + m).to(device);
    torch::Tensor logits;
    {
      // bf16 autocast on CUDA for the forward pass.
      resnet::Autocast autocast(torch::kCUDA, torch::kBFloat16, cuda_fast);
      logits = model->forward(x);
    }
    logits = logits.to(torch::kFloat);
    e.loss += torch::nn::functional::cross_entropy(
                  logits,
                  y,
                  torch::nn::functional::CrossEntropyFuncOptions().reduction(
                      torch::kSum))
                  .item<double>();
    const auto pred = logits.argmax(1).cpu();
    e.confusion += torch::bincount(
                       split.labels.slice(0, i, i + m) * classes + pred,
                       {},
                       classes * classes)
                       .reshape({classes, classes});
  }
  e.loss /= static_cast<double>(n);
  e.accuracy = e.confusion.diag().sum().item<double>() / static_cast<double>(n);
  return e;
}

} // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  // Only the first process of a multi-process launch (RANK=0, or none) talks
  // and writes files.
  const char* rank_env = std::getenv("RANK");
  const bool main_process = rank_env == nullptr || std::string(rank_env) == "0";

  if (args.threads > 0) {
    torch::set_num_threads(args.threads);
  } else if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    torch::set_num_threads(
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  const torch::Device device = args.device.empty()
      ? resnet::default_device()
      : resnet::parse_device(args.device);
  const bool cuda = device.is_cuda();
  if (!cuda) {
    // Keep freed activation memory for the next step instead of returning it
    // to the operating system (several percent faster on the CPU).
    resnet::enable_cpu_memory_cache();
  }
  const auto wall_start = std::chrono::steady_clock::now();

  Dataset data = load_dataset(args);
  const int64_t classes = static_cast<int64_t>(data.classes.size());
  const int64_t channels = data.train.images.size(1);
  const int64_t size = data.train.images.size(2);
  Args run_args = args;
  if (data.name == "mnist") {
    run_args.flip = false; // a flipped digit is another digit, or none
  }
  // Per-channel statistics of the training images.
  const auto as_float = data.train.images.to(torch::kFloat).div_(255.0);
  const auto mean = as_float.mean({0, 2, 3}).reshape({1, channels, 1, 1});
  const auto stdev = as_float.std(/*dim=*/{0, 2, 3}, /*unbiased=*/false)
                         .clamp_min(1e-6)
                         .reshape({1, channels, 1, 1});

  const bool cifar_stem =
      args.stem == "cifar" || (args.stem == "auto" && size <= 64);
  torch::manual_seed(args.seed);
  resnet::AnyResNet model = resnet::create(
      args.arch,
      resnet::ResNetOptions().num_classes(classes).in_channels(channels).stem(
          cifar_stem ? resnet::Stem::Cifar : resnet::Stem::ImageNet));
  model->to(device);
  if (cuda) {
    resnet::to_channels_last(*model);
  }
  torch::optim::SGD optimizer(
      model->parameters(),
      torch::optim::SGDOptions(args.lr)
          .momentum(args.momentum)
          .nesterov(args.nesterov)
          .weight_decay(args.weight_decay));

  const fs::path out = args.out;
  fs::create_directories(out);
  const int64_t n_train = data.train.images.size(0);
  const int64_t steps_per_epoch =
      (n_train + args.batch_size - 1) / args.batch_size;
  const int64_t total_steps = steps_per_epoch * args.epochs;
  const auto warmup_steps = static_cast<int64_t>(
      args.warmup_epochs * static_cast<double>(steps_per_epoch));

  RunState st;
  std::optional<RunState> resumed;
  if (args.resume) {
    if (main_process) {
      remove_temporaries(out);
    }
    resumed = load_checkpoint(out, model, optimizer, args, data.name);
    if (resumed) {
      st = *resumed;
    }
    if (resumed && main_process) {
      std::cout << "resuming " << out.string() << " at step " << st.step
                << " of " << total_steps << "\n";
      truncate_log(out / "steps.csv", st.step);
      truncate_log(out / "metrics.csv", st.step / steps_per_epoch);
    } else if (main_process) {
      std::cout << "no checkpoint in " << out.string()
                << " yet: starting from the beginning\n";
    }
  }
  if (!resumed && main_process) {
    std::ofstream(out / "metrics.csv")
        << "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,seconds,"
           "images_per_second\n";
  }
  std::ofstream step_log(
      out / "steps.csv", resumed ? std::ios::app : std::ios::trunc);
  if (!resumed) {
    step_log << "step,loss,lr\n";
  }

  if (main_process) {
    std::cout << "data: " << data.name << " " << args.data << " (" << n_train
              << " train, " << data.test.images.size(0) << " test, " << channels
              << "x" << size << "x" << data.train.images.size(3) << ", "
              << classes << " classes)\nmodel: " << args.arch << " ("
              << (cifar_stem ? "cifar" : "imagenet") << " stem), " << device
              << (cuda ? " bf16 channels_last" : "") << ", "
              << torch::get_num_threads() << " threads\n";
  }

  std::signal(SIGINT, on_sigint);
  const auto lr_at = [&](int64_t step) {
    if (step < warmup_steps) {
      return args.lr * static_cast<double>(step + 1) /
          static_cast<double>(warmup_steps);
    }
    const double t = static_cast<double>(step - warmup_steps) /
        static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
    return 0.5 * args.lr * (1 + std::cos(3.14159265358979323846 * t));
  };
  const auto loss_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(
          args.label_smoothing);

  int64_t steps_this_run = 0;
  bool stopped = false;
  Evaluation last_eval;
  while (st.step < total_steps && !stopped) {
    const int64_t epoch = st.step / steps_per_epoch;
    const auto order =
        torch::tensor(epoch_order(n_train, args.seed, epoch), torch::kLong);
    Progress progress(main_process, epoch + 1, args.epochs, steps_per_epoch);
    const double epoch_start_seconds = st.seconds;
    int64_t images_this_epoch = 0;
    model->train();
    for (int64_t b = st.step % steps_per_epoch; b < steps_per_epoch; ++b) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto idx = order.slice(
          0, b * args.batch_size, std::min(n_train, (b + 1) * args.batch_size));
      auto x = make_batch(
                   data.train.images.index_select(0, idx),
                   mean,
                   stdev,
                   run_args,
                   true,
                   mix(mix(args.seed, epoch), b))
                   .to(device);
      if (cuda) {
        x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      }
      const auto y = data.train.labels.index_select(0, idx).to(device);
      const double lr = lr_at(st.step);
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
      }
      optimizer.zero_grad();
      torch::Tensor logits;
      {
        resnet::Autocast autocast(torch::kCUDA, torch::kBFloat16, cuda);
        logits = model->forward(x);
      }
      logits = logits.to(torch::kFloat);
      const auto loss =
          torch::nn::functional::cross_entropy(logits, y, loss_options);
      loss.backward();
      optimizer.step();

      const double loss_value = loss.item<double>();
      TORCH_CHECK(
          std::isfinite(loss_value),
          "the loss became ",
          loss_value,
          " at step ",
          st.step,
          "; try a lower --lr");
      const int64_t m = y.size(0);
      st.epoch_loss += loss_value * static_cast<double>(m);
      st.epoch_correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      st.epoch_seen += m;
      images_this_epoch += m;
      st.seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
      ++st.step;
      ++steps_this_run;
      if (main_process) {
        step_log << st.step << "," << std::setprecision(9) << loss_value << ","
                 << lr << std::endl;
      }
      crash_point("step:" + std::to_string(st.step));
      progress.update(
          b + 1,
          st.epoch_loss / static_cast<double>(st.epoch_seen),
          static_cast<double>(st.epoch_correct) /
              static_cast<double>(st.epoch_seen),
          images_this_epoch);
      if (interrupted ||
          (args.stop_after > 0 && steps_this_run >= args.stop_after)) {
        stopped = true;
        break;
      }
    }
    if (stopped) {
      break;
    }

    // End of an epoch: evaluate, record, keep the best and the last.
    last_eval =
        evaluate(model, data.test, mean, stdev, args, device, classes, cuda);
    const double train_loss =
        st.epoch_loss / static_cast<double>(st.epoch_seen);
    const double train_acc = static_cast<double>(st.epoch_correct) /
        static_cast<double>(st.epoch_seen);
    const double epoch_seconds = st.seconds - epoch_start_seconds;
    if (main_process) {
      std::cout << "epoch " << epoch + 1 << "/" << args.epochs << ": test loss "
                << std::fixed << std::setprecision(4) << last_eval.loss
                << " accuracy " << std::setprecision(2)
                << 100 * last_eval.accuracy << "% (train " << 100 * train_acc
                << "%)\n"
                << std::defaultfloat;
      std::ofstream(out / "metrics.csv", std::ios::app)
          << epoch + 1 << "," << lr_at(st.step - 1) << "," << train_loss << ","
          << train_acc << "," << last_eval.loss << "," << last_eval.accuracy
          << "," << st.seconds << ","
          << static_cast<double>(images_this_epoch) /
              std::max(epoch_seconds, 1e-9)
          << "\n";
      plot_curves(out);
    }
    st.epoch_loss = 0;
    st.epoch_correct = 0;
    st.epoch_seen = 0;
    if (main_process && last_eval.accuracy > st.best_accuracy) {
      st.best_accuracy = last_eval.accuracy;
      resnet::save_state_dict(*model, (out / "best.pt").string());
    }
    if (main_process) {
      save_checkpoint(out, model, optimizer, st, args, data.name);
    }
  }
  step_log.flush();

  if (stopped) {
    if (main_process) {
      save_checkpoint(out, model, optimizer, st, args, data.name);
      std::cout << "\n"
                << (interrupted ? "interrupted" : "stopped") << " at step "
                << st.step << " of " << total_steps << "; checkpoint saved in "
                << out.string() << " (continue with --resume)\n";
    }
    return interrupted ? 130 : 0;
  }

  // The final report.
  if (!last_eval.confusion.defined()) {
    last_eval =
        evaluate(model, data.test, mean, stdev, args, device, classes, cuda);
  }
  const double wall = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - wall_start)
                          .count();
  if (main_process) {
    const auto per_class = last_eval.confusion.diag().to(torch::kDouble) /
        last_eval.confusion.sum(1).to(torch::kDouble).clamp_min(1);
    std::cout << "\nper-class test accuracy:\n";
    for (int64_t c = 0; c < classes; ++c) {
      std::cout << "  " << std::left << std::setw(14) << data.classes[c]
                << std::right << std::fixed << std::setprecision(2)
                << 100 * per_class[c].item<double>() << "%\n";
    }
    std::cout << "confusion matrix (rows: true class, columns: predicted):\n";
    for (int64_t r = 0; r < classes; ++r) {
      std::cout << "  ";
      for (int64_t c = 0; c < classes; ++c) {
        std::cout << std::setw(6) << last_eval.confusion[r][c].item<int64_t>();
      }
      std::cout << "\n";
    }
    std::ostringstream j;
    j << std::setprecision(6) << "{\n  \"arch\": " << json_string(args.arch)
      << ",\n  \"dataset\": " << json_string(data.name)
      << ",\n  \"data\": " << json_string(args.data)
      << ",\n  \"epochs\": " << args.epochs
      << ",\n  \"test_accuracy\": " << last_eval.accuracy
      << ",\n  \"best_test_accuracy\": " << st.best_accuracy
      << ",\n  \"test_loss\": " << last_eval.loss
      << ",\n  \"train_images\": " << n_train
      << ",\n  \"test_images\": " << data.test.images.size(0)
      << ",\n  \"seconds\": " << wall
      << ",\n  \"training_seconds\": " << st.seconds
      << ",\n  \"device\": " << json_string(device.str())
      << ",\n  \"threads\": " << torch::get_num_threads()
      << ",\n  \"seed\": " << args.seed << ",\n  \"mean\": [";
    for (int64_t c = 0; c < channels; ++c) {
      j << (c ? ", " : "") << mean.flatten()[c].item<double>();
    }
    j << "],\n  \"std\": [";
    for (int64_t c = 0; c < channels; ++c) {
      j << (c ? ", " : "") << stdev.flatten()[c].item<double>();
    }
    j << "],\n  \"classes\": [";
    for (int64_t c = 0; c < classes; ++c) {
      j << (c ? ", " : "") << json_string(data.classes[c]);
    }
    j << "],\n  \"per_class_accuracy\": [";
    for (int64_t c = 0; c < classes; ++c) {
      j << (c ? ", " : "") << per_class[c].item<double>();
    }
    j << "],\n  \"confusion_matrix\": [";
    for (int64_t r = 0; r < classes; ++r) {
      j << (r ? ",\n    [" : "\n    [");
      for (int64_t c = 0; c < classes; ++c) {
        j << (c ? ", " : "") << last_eval.confusion[r][c].item<int64_t>();
      }
      j << "]";
    }
    j << "]\n}\n";
    write_text_atomically(out / "summary.json", j.str());
    std::cout << std::fixed << std::setprecision(2) << "\ntest accuracy "
              << 100 * last_eval.accuracy << "% after " << args.epochs
              << " epochs (" << args.arch << ", " << clock_time(wall)
              << " wall time); results in " << out.string() << "\n";
  }
  return 0;
} catch (const UsageError& u) {
  if (!u.problem.empty()) {
    std::cerr << "train_classifier: " << u.problem << "\n";
  }
  (u.code ? std::cerr : std::cout) << kUsage;
  return u.code;
} catch (const c10::Error& e) {
  std::cerr << "train_classifier: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "train_classifier: " << e.what() << "\n";
  return 1;
}
