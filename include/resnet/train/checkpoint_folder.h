#pragma once

// Training checkpoints that survive the process being killed at any moment:
// the model's weights, the optimizer's state and the run's own state (JSON,
// nlohmann/json) in a folder, replaced atomically.

#include <resnet/io/files.h>
#include <resnet/io/weights.h>
#include <resnet/train/interrupt.h>
#include <resnet/train/metrics.h>

#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

namespace detail {
/// How many checkpoints this process has begun to save.
inline int64_t& checkpoints_saved() {
  static int64_t count = 0;
  return count;
}
} // namespace detail

/// Where a training run stands, for its checkpoints: the optimizer steps
/// taken, the best test accuracy so far (-1: none yet), the training time and
/// the running totals of the epoch under way.
struct RunProgress {
  /// Optimizer steps taken.
  int64_t step = 0;
  /// The best test accuracy so far, in [0, 1]; -1 before the first test.
  double best = -1;
  /// Training time so far, in seconds.
  double seconds = 0;
  /// The running totals of the epoch under way.
  EpochTotals epoch;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RunProgress, step, best, seconds, epoch)

/// What resuming a run in `folder` found, for a log: "resuming FOLDER at
/// step N", or "from the start: no checkpoint yet in FOLDER".
inline std::string describe_resume(
    const std::optional<RunProgress>& saved,
    const std::string& folder) {
  return saved
      ? "resuming " + folder + " at step " + std::to_string(saved->step)
      : "from the start: no checkpoint yet in " + folder;
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
  /// Checkpoints in the folder `dir` (not empty); nothing is created or read
  /// until a checkpoint is saved or loaded.
  explicit CheckpointFolder(std::string dir) : dir_(std::move(dir)) {
    TORCH_CHECK(!dir_.empty(), "resnet: a checkpoint folder needs a path");
  }

  /// The folder's path, as given.
  const std::string& dir() const {
    return dir_;
  }

  /// Called with "model", "optimizer" and "state" after each file of a
  /// checkpoint is written (for "state": before it replaces the last one).
  /// For tests that stop the process there; the crash point
  /// "checkpoint:K:model" (`crash_point`, K counting this process's
  /// checkpoints from 1) does that for a whole program.
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
    number_ = ++detail::checkpoints_saved();
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

  /// Saves a training run at `progress`, with `identity` (what a resumed
  /// run must share with this one, for `resume`) in its state.
  void save(
      const RunProgress& progress,
      const torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      nlohmann::json identity) {
    identity.update(nlohmann::json(progress));
    save(progress.step, model, optimizer, std::move(identity));
  }

  /// Continues a run saved with save(progress, ...): where it stood, its
  /// weights and optimizer state loaded, after checking that it shares
  /// `identity`; nullopt (nothing loaded) when the folder has no
  /// checkpoint. With `tidy`, first removes what a killed process left.
  std::optional<RunProgress> resume(
      torch::nn::Module& model,
      torch::optim::Optimizer& optimizer,
      const nlohmann::json& identity,
      bool tidy = true) const {
    if (tidy) {
      remove_temporaries();
    }
    const auto state = load(model, optimizer, identity);
    return state ? std::optional(state->get<RunProgress>()) : std::nullopt;
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
    crash_point("checkpoint:" + std::to_string(number_) + ":" + what);
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
  int64_t number_ = 0;
};

} // namespace resnet
