#pragma once

// The parts of a training loop that outlive one run: the learning-rate
// schedule and checkpoints that survive the process being killed at any
// moment. Not part of <resnet/resnet.h>; needs nlohmann/json (Debian:
// nlohmann-json3-dev), as safetensors.h does.

#include <resnet/detail/describe.h>
#include <resnet/io.h>
#include <resnet/optim.h>
#include <resnet/weights.h>

#include <c10/util/Exception.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <stdio.h>
#include <unistd.h>
#endif

namespace resnet {

/// Linear warm-up from `peak / warmup` to `peak` over the first `warmup`
/// steps, then a cosine decay that reaches zero after `total` steps.
struct WarmupCosine {
  double peak = 0.1;
  int64_t warmup = 0;
  int64_t total = 1;

  /// The learning rate of optimizer step `step` (0-based).
  double operator()(int64_t step) const {
    if (step < warmup) {
      return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    }
    const double t = static_cast<double>(step - warmup) /
        static_cast<double>(std::max<int64_t>(1, total - warmup));
    return 0.5 * peak * (1 + std::cos(3.14159265358979323846 * t));
  }
};

/// Warm-up steps for a run of `total_steps`: `epochs` epochs when it is given
/// (>= 0), else one epoch but never more than a tenth of the run, so that a
/// short run is not all warm-up.
inline int64_t warmup_steps(
    std::optional<double> epochs,
    int64_t steps_per_epoch,
    int64_t total_steps) {
  if (epochs) {
    TORCH_CHECK(*epochs >= 0, "resnet: warm-up epochs must be >= 0");
    return static_cast<int64_t>(
        std::llround(*epochs * static_cast<double>(steps_per_epoch)));
  }
  return std::min(steps_per_epoch, total_steps / 10);
}

/// Keeps the header and the rows of a CSV file whose first column is a number
/// up to `last`: the rows a killed run wrote after its last checkpoint are
/// dropped, to be written again when it resumes. Nothing when there is no
/// file.
inline void truncate_csv(const std::string& path, int64_t last) {
  std::ifstream in(path);
  if (!in) {
    return;
  }
  std::string text, line;
  for (bool header = true; std::getline(in, line); header = false) {
    char* end = nullptr;
    const long long first = std::strtoll(line.c_str(), &end, 10);
    if (header || (end != line.c_str() && *end == ',' && first <= last)) {
      text += line + "\n";
    }
  }
  in.close();
  write_file_atomically(path, text);
}

/// Training checkpoints in a folder, written so that a process killed at any
/// moment leaves the last complete one in force:
///
///   DIR/checkpoint/model-STEP.pt, DIR/checkpoint/optimizer-STEP.pt, then
///   DIR/last_state.json (the step and the caller's state) replaced
///   atomically; then DIR/last.pt, the model's weights under a stable name.
///
/// The weights are a torchvision-style state dict (`torch.load` in Python,
/// `resnet::load_state_dict` in C++); the optimizer file is LibTorch's.
class CheckpointFolder {
 public:
  explicit CheckpointFolder(std::string dir) : dir_(std::move(dir)) {
    TORCH_CHECK(!dir_.empty(), "resnet: a checkpoint folder needs a path");
  }

  const std::string& dir() const {
    return dir_;
  }

  /// Called with "model", "optimizer" and "state" after each file of a
  /// checkpoint is written (for "state": before it replaces the last one).
  /// For tests that stop the process there.
  void on_written(std::function<void(const std::string&)> hook) {
    hook_ = std::move(hook);
  }

  /// Writes the checkpoint of optimizer step `step`. `state` (a JSON object)
  /// comes back from `load`, with "step" added.
  void save(
      int64_t step,
      const torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      nlohmann::json state = nlohmann::json::object()) {
    namespace fs = std::filesystem;
    TORCH_CHECK(
        state.is_object(), "resnet: checkpoint state must be a JSON object");
    fs::create_directories(fs::path(dir_) / "checkpoint");
    const auto model_file = step_file("model", step);
    const auto optimizer_file = step_file("optimizer", step);
    save_state_dict(model, model_file);
    written("model");
    std::ostringstream bytes;
    torch::save(optimizer, bytes);
    write_file_atomically(optimizer_file, bytes.str());
    written("optimizer");
    state["step"] = step;
    const std::string text = state.dump(2) + "\n";
    StagedFile staged(state_path(), text.data(), text.size());
    written("state");
    staged.commit();
    // last.pt: a hard link to the weights where the file system has them,
    // a copy elsewhere; replaced atomically.
    const fs::path last = fs::path(dir_) / "last.pt";
    const fs::path tmp = fs::path(dir_) / "last.pt.tmp";
    fs::remove(tmp);
    std::error_code linked;
    fs::create_hard_link(model_file, tmp, linked);
    if (linked) {
      fs::copy_file(model_file, tmp);
    }
    fs::rename(tmp, last);
    // Files of other steps: older checkpoints, or a newer one that a killed
    // process left unnamed.
    remove_files_if(fs::path(dir_) / "checkpoint", [&](const fs::path& p) {
      return p != model_file && p != optimizer_file;
    });
  }

  /// The state of the last complete checkpoint, its weights loaded into
  /// `model` and its optimizer state into `optimizer`; nullopt when there is
  /// none. A damaged state file is an error, as is a state that differs from
  /// `expected` (see `read_state`), checked before anything is loaded.
  std::optional<nlohmann::json> load(
      torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      const nlohmann::json& expected = nlohmann::json::object()) const {
    auto state = read_state(expected);
    if (state) {
      const auto step = state->at("step").get<int64_t>();
      load_state_dict(model, step_file("model", step));
      torch::load(optimizer, step_file("optimizer", step));
    }
    return state;
  }

  /// Removes the temporary files (`*.tmp*`) that a killed process left in the
  /// folder.
  void remove_temporaries() const {
    if (std::filesystem::is_directory(dir_)) {
      remove_files_if(dir_, [](const std::filesystem::path& p) {
        return p.filename().string().find(".tmp") != std::string::npos;
      });
    }
  }

  /// The state of the last complete checkpoint without loading anything;
  /// nullopt when there is none. Each entry of `expected` (e.g. the settings
  /// a resumed run must share) must be in the state with the same value,
  /// else the error names the entry and both values.
  std::optional<nlohmann::json> read_state(
      const nlohmann::json& expected = nlohmann::json::object()) const {
    auto state = read_state_file();
    for (auto it = expected.begin(); state && it != expected.end(); ++it) {
      const auto theirs =
          state->contains(it.key()) ? state->at(it.key()) : nlohmann::json();
      TORCH_CHECK(
          theirs == *it,
          "resnet: cannot resume: the run in '",
          dir_,
          "' has ",
          it.key(),
          " ",
          theirs.dump(),
          ", this one ",
          it->dump());
    }
    return state;
  }

 private:
  std::optional<nlohmann::json> read_state_file() const {
    std::ifstream in(state_path());
    if (!in) {
      return std::nullopt;
    }
    try {
      auto state = nlohmann::json::parse(in);
      (void)state.at("step").get<int64_t>();
      return state;
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK(
          false,
          "resnet: cannot resume: '",
          state_path(),
          "' is damaged: ",
          e.what());
    }
  }

  std::string state_path() const {
    return (std::filesystem::path(dir_) / "last_state.json").string();
  }

  std::string step_file(const char* kind, int64_t step) const {
    return (std::filesystem::path(dir_) / "checkpoint" /
            (kind + std::string("-") + std::to_string(step) + ".pt"))
        .string();
  }

  void written(const std::string& what) const {
    if (hook_) {
      hook_(what);
    }
  }

  // Collects first, then removes: removing while iterating a folder is
  // unspecified.
  template <typename Predicate>
  static void remove_files_if(
      const std::filesystem::path& dir,
      Predicate remove) {
    std::vector<std::filesystem::path> found;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.is_regular_file() && remove(e.path())) {
        found.push_back(e.path());
      }
    }
    for (const auto& f : found) {
      std::filesystem::remove(f);
    }
  }

  std::string dir_;
  std::function<void(const std::string&)> hook_;
};

/// Counts of (true class, predicted class) pairs over an evaluation.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t classes)
      : counts_(torch::zeros({classes, classes}, torch::kLong)) {
    TORCH_CHECK(classes >= 1, "resnet: ConfusionMatrix needs >= 1 class");
  }

  /// Adds a batch: `logits` [N, classes] (or predicted classes [N]) and the
  /// true classes [N], on any device.
  void add(const torch::Tensor& logits, const torch::Tensor& targets) {
    const int64_t k = classes();
    const auto predicted = logits.dim() == 2 ? logits.argmax(1) : logits;
    TORCH_CHECK(
        predicted.dim() == 1 && targets.dim() == 1 &&
            predicted.size(0) == targets.size(0) &&
            (logits.dim() == 1 || logits.size(1) == k),
        "resnet: ConfusionMatrix::add expects logits [N, ",
        k,
        "] and targets [N], got ",
        logits.sizes(),
        " and ",
        targets.sizes());
    const auto t = targets.to(torch::kCPU, torch::kLong);
    if (t.numel() > 0) {
      TORCH_CHECK(
          t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < k,
          "resnet: ConfusionMatrix::add: a target outside [0, ",
          k,
          ")");
    }
    counts_ += torch::bincount(t * k + predicted.to(torch::kCPU), {}, k * k)
                   .reshape({k, k});
    if (logits.dim() == 2) {
      loss_sum_ +=
          torch::nn::functional::cross_entropy(
              logits.to(torch::kFloat),
              targets.to(logits.device(), torch::kLong),
              torch::nn::functional::CrossEntropyFuncOptions().reduction(
                  torch::kSum))
              .item<double>();
    }
  }

  /// The mean cross entropy of the logits added (0 when none were).
  double loss() const {
    const auto n = total();
    return n == 0 ? 0.0 : loss_sum_ / static_cast<double>(n);
  }

  int64_t classes() const {
    return counts_.size(0);
  }
  /// [true class, predicted class], int64.
  const torch::Tensor& counts() const {
    return counts_;
  }
  int64_t total() const {
    return counts_.sum().item<int64_t>();
  }
  /// The fraction predicted right; 0 when empty.
  double accuracy() const {
    const auto n = total();
    return n == 0 ? 0.0
                  : static_cast<double>(counts_.diag().sum().item<int64_t>()) /
            static_cast<double>(n);
  }
  /// The accuracy within each true class (0 for a class never seen).
  std::vector<double> per_class() const {
    const auto right = counts_.diag().to(torch::kDouble);
    const auto seen = counts_.sum(1).to(torch::kDouble).clamp_min(1);
    const auto a = (right / seen).contiguous();
    return {a.data_ptr<double>(), a.data_ptr<double>() + classes()};
  }
  /// The per-class accuracy and the matrix as text, rows labelled by `names`.
  std::string to_string(const std::vector<std::string>& names) const {
    std::ostringstream o;
    const auto acc = per_class();
    o << "per-class test accuracy:\n" << std::fixed << std::setprecision(2);
    for (int64_t c = 0; c < classes(); ++c) {
      o << "  " << std::left << std::setw(14) << label(names, c) << std::right
        << 100 * acc[static_cast<size_t>(c)] << "%\n";
    }
    o << "confusion matrix (rows: true class, columns: predicted):\n";
    const auto rows = to_json();
    for (const auto& row : rows) {
      o << " ";
      for (const auto& v : row) {
        o << " " << std::setw(5) << v.get<int64_t>();
      }
      o << "\n";
    }
    return o.str();
  }
  /// The class names, the per-class accuracy and the matrix, as JSON.
  nlohmann::json summary(const std::vector<std::string>& names) const {
    return {
        {"classes", names},
        {"per_class_accuracy", per_class()},
        {"confusion_matrix", to_json()}};
  }
  /// The counts, then the loss sum, as one float64 tensor [k * k + 1]: e.g.
  /// to sum the evaluations of several processes, then from_totals().
  torch::Tensor totals() const {
    return torch::cat(
        {counts_.flatten().to(torch::kDouble),
         torch::tensor({loss_sum_}, torch::kDouble)});
  }
  /// The matrix of totals() (or of a sum of them).
  static ConfusionMatrix from_totals(const torch::Tensor& totals) {
    const auto t = totals.to(torch::kCPU, torch::kDouble).contiguous();
    const auto k = static_cast<int64_t>(std::lround(
        std::sqrt(static_cast<double>(std::max<int64_t>(t.numel() - 1, 0)))));
    TORCH_CHECK(
        t.dim() == 1 && k >= 1 && t.numel() == k * k + 1,
        "resnet: ConfusionMatrix::from_totals expects k * k + 1 values, got "
        "a tensor of shape ",
        t.sizes());
    const auto counts = t.slice(0, 0, k * k);
    TORCH_CHECK(
        counts.ge(0).all().item<bool>() &&
            counts.eq(counts.round()).all().item<bool>(),
        "resnet: ConfusionMatrix::from_totals: counts must be whole and "
        "non-negative");
    ConfusionMatrix m(k);
    m.counts_ = counts.to(torch::kLong).reshape({k, k});
    m.loss_sum_ = t[k * k].item<double>();
    return m;
  }
  /// The matrix as nested JSON arrays.
  nlohmann::json to_json() const {
    auto rows = nlohmann::json::array();
    for (int64_t t = 0; t < classes(); ++t) {
      const auto row = counts_[t].contiguous();
      rows.push_back(std::vector<int64_t>(
          row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + classes()));
    }
    return rows;
  }

 private:
  static std::string label(const std::vector<std::string>& names, int64_t c) {
    return c < static_cast<int64_t>(names.size())
        ? names[static_cast<size_t>(c)]
        : std::to_string(c);
  }

  torch::Tensor counts_;
  double loss_sum_ = 0;
};

/// Running totals of a training epoch; saved with checkpoints (JSON).
struct EpochTotals {
  double loss = 0; ///< the sum of batch losses times batch sizes
  int64_t correct = 0;
  int64_t seen = 0;

  /// Adds a batch: its mean loss, its logits [N, classes] and true classes.
  void add(
      double batch_loss,
      const torch::Tensor& logits,
      const torch::Tensor& targets) {
    const int64_t n = targets.size(0);
    loss += batch_loss * static_cast<double>(n);
    correct += logits.argmax(1).eq(targets).sum().item<int64_t>();
    seen += n;
  }
  double mean_loss() const {
    return seen ? loss / static_cast<double>(seen) : 0.0;
  }
  double accuracy() const {
    return seen ? static_cast<double>(correct) / static_cast<double>(seen)
                : 0.0;
  }
  /// "loss 0.1234 acc 95.67%".
  std::string to_string() const {
    std::ostringstream o;
    o << std::fixed << std::setprecision(4) << "loss " << mean_loss()
      << std::setprecision(2) << " acc " << 100 * accuracy() << "%";
    return o.str();
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(EpochTotals, loss, correct, seen)

/// Where a training run stands, for its checkpoints: the optimizer steps
/// taken, the best test accuracy so far (-1: none yet), the training time and
/// the running totals of the epoch under way.
struct RunProgress {
  int64_t step = 0;
  double best = -1;
  double seconds = 0;
  EpochTotals epoch;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RunProgress, step, best, seconds, epoch)

/// One epoch's figures, a row of metrics.csv.
struct EpochMetrics {
  int64_t epoch = 0;
  double lr = 0, train_loss = 0, train_accuracy = 0;
  double test_loss = 0, test_accuracy = 0;
  double seconds = 0; ///< training time so far
  double images_per_second = 0;

  /// The figures of epoch `epoch` (1-based) from its training totals and
  /// its evaluation.
  static EpochMetrics of(
      int64_t epoch,
      double lr,
      const EpochTotals& train,
      const ConfusionMatrix& test,
      double seconds,
      double images_per_second) {
    return {
        epoch,
        lr,
        train.mean_loss(),
        train.accuracy(),
        test.loss(),
        test.accuracy(),
        seconds,
        images_per_second};
  }

  /// "epoch 3/5: test loss 0.2871 accuracy 90.12% (train 88.40%)".
  std::string to_string(int64_t epochs) const {
    std::ostringstream o;
    o << "epoch " << epoch << "/" << epochs << ": test loss " << std::fixed
      << std::setprecision(4) << test_loss << " accuracy "
      << std::setprecision(2) << 100 * test_accuracy << "% (train "
      << 100 * train_accuracy << "%)";
    return o.str();
  }
};

/// The logs of a training run in a folder: DIR/steps.csv (step, loss, lr),
/// DIR/metrics.csv (one EpochMetrics row per epoch) and DIR/curves.png, the
/// loss and accuracy curves drawn by gnuplot where it is installed.
class TrainingLog {
 public:
  /// New logs; or, for a run resumed after optimizer step `resumed_step`,
  /// the rows up to that step and its epochs kept (a killed run may have
  /// written more) and the logs continued.
  TrainingLog(
      std::string dir,
      std::optional<int64_t> resumed_step,
      int64_t steps_per_epoch)
      : dir_(std::move(dir)) {
    TORCH_CHECK(steps_per_epoch >= 1, "resnet: steps_per_epoch must be >= 1");
    if (resumed_step) {
      truncate_csv(path("steps.csv"), *resumed_step);
      truncate_csv(path("metrics.csv"), *resumed_step / steps_per_epoch);
    } else {
      write_file_atomically(path("steps.csv"), std::string("step,loss,lr\n"));
      write_file_atomically(
          path("metrics.csv"),
          std::string(
              "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,"
              "seconds,images_per_second\n"));
    }
    steps_.open(path("steps.csv"), std::ios::app);
    TORCH_CHECK(steps_, "resnet: cannot write '", path("steps.csv"), "'");
  }

  /// A row of steps.csv, flushed (the crash-safety tests read it).
  void step(int64_t step, double loss, double lr) {
    steps_ << step << "," << std::setprecision(9) << loss << "," << lr
           << std::endl;
  }

  /// A row of metrics.csv, then curves.png redrawn; false when gnuplot could
  /// not draw it (said once on stderr).
  bool epoch(const EpochMetrics& m) {
    std::ofstream(path("metrics.csv"), std::ios::app)
        << std::setprecision(9) << m.epoch << "," << m.lr << "," << m.train_loss
        << "," << m.train_accuracy << "," << m.test_loss << ","
        << m.test_accuracy << "," << m.seconds << "," << m.images_per_second
        << "\n";
    const std::string csv = "'" + path("metrics.csv") + "'";
    std::ofstream(path("curves.gnuplot"))
        << "set terminal png size 1000,420\nset output '" << path("curves.png")
        << "'\nset datafile separator ','\n"
        << "set key autotitle columnhead\nset multiplot layout 1,2\n"
        << "set xlabel 'epoch'\nset title 'loss'\nplot " << csv
        << " using 1:3 with linespoints title 'train', '' using 1:5 with "
        << "linespoints title 'test'\nset title 'accuracy (%)'\nplot " << csv
        << " using 1:($4*100) with linespoints title 'train', '' using "
        << "1:($6*100) with linespoints title 'test'\nunset multiplot\n";
    const auto cmd = "gnuplot '" + path("curves.gnuplot") + "' 2>/dev/null";
    const bool drawn = std::system(cmd.c_str()) == 0;
    if (!drawn && !warned_) {
      std::cerr << "resnet: no curves.png (is gnuplot installed?)\n";
      warned_ = true;
    }
    return drawn;
  }

 private:
  std::string path(const char* name) const {
    return (std::filesystem::path(dir_) / name).string();
  }

  std::string dir_;
  std::ofstream steps_;
  bool warned_ = false;
};

/// Seconds elapsed since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

namespace detail {
inline std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
inline void on_interrupt(int) {
  interrupt_flag() = true;
  std::signal(SIGINT, SIG_DFL); // a second Ctrl-C ends the program at once
}
} // namespace detail

/// Makes Ctrl-C (SIGINT) a request to stop that a training loop polls with
/// `interrupt_requested()`, so that it can save a checkpoint first; a second
/// Ctrl-C ends the program at once.
inline void stop_on_interrupt() {
  detail::interrupt_flag() = false;
  std::signal(SIGINT, detail::on_interrupt);
}
inline bool interrupt_requested() {
  return detail::interrupt_flag();
}

/// A fault-injection point for crash-safety tests: when the environment
/// variable `variable` equals `name`, the process kills itself (SIGKILL)
/// on the spot, as a power cut or `kill -9` would.
inline void crash_point(
    const std::string& name,
    const char* variable = "RESNET_CRASH_AT") {
  const char* at = std::getenv(variable);
  if (at != nullptr && name == at) {
    std::cout << std::flush;
    std::raise(SIGKILL);
  }
}

/// Minutes and seconds, "m:ss".
inline std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream o;
  o << s / 60 << ":" << std::setw(2) << std::setfill('0') << s % 60;
  return o.str();
}

/// A progress bar for a loop of `total` steps, such as an epoch: redrawn in
/// place on a terminal; on other output (a log file) printed when each
/// quarter is reached.
class ProgressLine {
 public:
  /// `unit` names what `update` counts, for the rate ("img" gives img/s).
  ProgressLine(
      std::string label,
      int64_t total,
      bool enabled = true,
      std::string unit = "items")
      : label_(std::move(label)),
        unit_(std::move(unit)),
        total_(std::max<int64_t>(1, total)),
        enabled_(enabled),
        start_(std::chrono::steady_clock::now()) {
#if defined(__unix__) || defined(__APPLE__)
    tty_ = ::isatty(::fileno(stdout)) != 0;
#endif
  }

  /// Shows step `done` of the total with `text` (e.g. the loss so far), the
  /// rate of `items` (processed since construction) per second and the time
  /// left.
  void update(int64_t done, const std::string& text, int64_t items) {
    const bool last = done >= total_;
    const bool quarter = (4 * done) / total_ != (4 * (done - 1)) / total_;
    if (!enabled_ || (!tty_ && !last && !quarter)) {
      return;
    }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
            .count();
    constexpr int64_t kWidth = 24;
    const auto filled = static_cast<size_t>(kWidth * done / total_);
    std::ostringstream line;
    line << label_ << " [" << std::string(filled, '#')
         << std::string(static_cast<size_t>(kWidth) - filled, '.') << "] "
         << done << "/" << total_ << " " << text << " " << std::fixed
         << std::setprecision(0)
         << static_cast<double>(items) / std::max(elapsed, 1e-9) << " " << unit_
         << "/s ETA "
         << format_duration(
                elapsed / static_cast<double>(std::max<int64_t>(1, done)) *
                static_cast<double>(total_ - done));
    std::cout << (tty_ ? "\r" : "") << line.str() << (tty_ && !last ? "" : "\n")
              << std::flush;
  }

 private:
  std::string label_, unit_;
  int64_t total_;
  bool enabled_;
  bool tty_ = false;
  std::chrono::steady_clock::time_point start_;
};

} // namespace resnet
