#pragma once

// What a training run measures: the confusion matrix of an evaluation, the
// running totals of an epoch, and one epoch's figures. The totals and the
// matrix convert to JSON (nlohmann/json, Debian: nlohmann-json3-dev) for
// checkpoints and reports.

#include <resnet/train/distributed/group.h>

#include <c10/util/Exception.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

/// Counts of (true class, predicted class) pairs over an evaluation.
class ConfusionMatrix {
 public:
  /// An empty matrix of `classes` >= 1 rows and columns.
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

  /// The number of classes k: the matrix is k x k.
  int64_t classes() const {
    return counts_.size(0);
  }
  /// [true class, predicted class], int64.
  const torch::Tensor& counts() const {
    return counts_;
  }
  /// The number of examples added.
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
  /// As JSON: the class names, the accuracy, mean loss and number of
  /// examples (as test_accuracy, test_loss, test_images), the per-class
  /// accuracy and the matrix.
  nlohmann::json summary(const std::vector<std::string>& names) const {
    return {
        {"classes", names},
        {"test_accuracy", accuracy()},
        {"test_loss", loss()},
        {"test_images", total()},
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
  /// The matrix of every process of `group` together (one collective; every
  /// process must call it): the sum of their counts and losses.
  ConfusionMatrix summed_over(distributed::Group& group) const {
    auto sum = totals();
    group.all_reduce_sum_({sum});
    return from_totals(sum);
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
  int64_t correct = 0; ///< examples whose highest logit is the true class
  int64_t seen = 0; ///< examples added

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
  /// What one training step added, over all the processes.
  struct Step {
    double loss = 0; ///< the step's mean loss
    int64_t images = 0; ///< the examples of the step
    bool stop = false; ///< whether any process asked to stop
  };
  /// Adds a training step of every process of `group`: each process's
  /// share of the batch (its mean loss, its logits [N, classes] and true
  /// classes), summed in one collective together with whether any process
  /// wants to stop. Returns the same Step in every process.
  Step add_step(
      const torch::Tensor& batch_loss,
      const torch::Tensor& logits,
      const torch::Tensor& targets,
      bool stop,
      distributed::Group& group) {
    EpochTotals mine;
    mine.add(batch_loss.item<double>(), logits, targets);
    const auto sum = group.sum(
        {mine.loss,
         static_cast<double>(mine.correct),
         static_cast<double>(mine.seen),
         stop ? 1.0 : 0.0});
    loss += sum[0];
    correct += static_cast<int64_t>(sum[1]);
    seen += static_cast<int64_t>(sum[2]);
    return {
        sum[2] > 0 ? sum[0] / sum[2] : 0.0,
        static_cast<int64_t>(sum[2]),
        sum[3] > 0};
  }
  /// The mean loss per example; 0 before the first batch.
  double mean_loss() const {
    return seen ? loss / static_cast<double>(seen) : 0.0;
  }
  /// The fraction predicted right, in [0, 1]; 0 before the first batch.
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

/// One epoch's figures, a row of metrics.csv.
struct EpochMetrics {
  int64_t epoch = 0; ///< 1-based
  /// The learning rate of the epoch's last step.
  double lr = 0, train_loss = 0, train_accuracy = 0;
  /// \var train_loss
  /// The mean training loss over the epoch.

  /// \var train_accuracy
  /// The fraction of training examples predicted right, in [0, 1].

  /// The mean cross entropy on the test set.
  double test_loss = 0, test_accuracy = 0;
  /// \var test_accuracy
  /// The fraction of test examples predicted right, in [0, 1].

  double seconds = 0; ///< training time so far
  double images_per_second = 0; ///< training throughput over the epoch

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

} // namespace resnet
