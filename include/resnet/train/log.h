#pragma once

// The logs of a training run: a row per optimizer step and per epoch (CSV),
// and the loss and accuracy curves drawn as an SVG file; a resumed run
// continues them.

#include <resnet/io/files.h>
#include <resnet/train/metrics.h>
#include <resnet/train/plot.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

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

/// The logs of a training run in a folder: DIR/steps.csv (step, loss, lr),
/// DIR/metrics.csv (one EpochMetrics row per epoch) and DIR/curves.svg, the
/// loss and accuracy curves.
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

  /// A row of metrics.csv, then curves.svg redrawn from all its rows (the
  /// loss and the accuracy of training and test per epoch).
  void epoch(const EpochMetrics& m) {
    {
      std::ofstream metrics(path("metrics.csv"), std::ios::app);
      metrics << std::setprecision(9) << m.epoch << "," << m.lr << ","
              << m.train_loss << "," << m.train_accuracy << "," << m.test_loss
              << "," << m.test_accuracy << "," << m.seconds << ","
              << m.images_per_second << "\n";
      TORCH_CHECK(metrics, "resnet: cannot write '", path("metrics.csv"), "'");
    }
    write_file_atomically(path("curves.svg"), curves_svg());
  }

 private:
  std::string path(const char* name) const {
    return (std::filesystem::path(dir_) / name).string();
  }

  // The loss and accuracy charts of metrics.csv's rows.
  std::string curves_svg() const {
    Chart loss{"loss", "epoch", {{"train", {}, {}}, {"test", {}, {}}}};
    Chart accuracy{
        "accuracy (%)", "epoch", {{"train", {}, {}}, {"test", {}, {}}}};
    std::ifstream in(path("metrics.csv"));
    std::string line;
    std::getline(in, line); // the header
    while (std::getline(in, line)) {
      std::vector<double> v;
      std::istringstream fields(line);
      for (std::string field; std::getline(fields, field, ',');) {
        v.push_back(std::strtod(field.c_str(), nullptr));
      }
      if (v.size() < 6) {
        continue;
      }
      for (auto* chart : {&loss, &accuracy}) {
        for (auto& s : chart->series) {
          s.x.push_back(v[0]);
        }
      }
      loss.series[0].y.push_back(v[2]);
      loss.series[1].y.push_back(v[4]);
      accuracy.series[0].y.push_back(100 * v[3]);
      accuracy.series[1].y.push_back(100 * v[5]);
    }
    return line_charts_svg({loss, accuracy});
  }

  std::string dir_;
  std::ofstream steps_;
};

} // namespace resnet
