// The training-loop parts of include/resnet/train/: the schedule,
// checkpoints that survive a process killed while writing them, the logs,
// the confusion matrix and the progress line.

#include "test_support.h"

#include <resnet/data/prepare.h>
#include <resnet/train.h>
#include <resnet/train/optim.h>

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_training {

namespace fs = std::filesystem;
using resnet_test::contains;
using resnet_test::error_of;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A small network and an SGD optimizer with momentum that has taken a step,
// so that its state (the momentum buffers) is not empty.
struct Trained {
  resnet::AnyResNet model = resnet::create(
      "resnet20",
      resnet::ResNetOptions().num_classes(3).in_channels(1));
  torch::optim::SGD optimizer{
      model->parameters(),
      torch::optim::SGDOptions(0.1).momentum(0.9)};

  explicit Trained(int64_t seed) {
    torch::manual_seed(seed);
    for (auto& p : model->parameters()) {
      torch::NoGradGuard no_grad;
      p.normal_();
    }
    step();
  }

  void step() {
    optimizer.zero_grad();
    model->forward(torch::randn({2, 1, 8, 8})).sum().backward();
    optimizer.step();
  }
};

torch::Tensor fc_weight(resnet::AnyResNet& model) {
  return model->named_parameters()["fc.weight"].detach().clone();
}

bool same_parameters(resnet::AnyResNet& a, resnet::AnyResNet& b) {
  const auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i], pb[i])) {
      return false;
    }
  }
  return true;
}

} // namespace

TEST(Schedule, WarmsUpLinearlyThenDecaysToZero) {
  const resnet::WarmupCosine lr{0.4, 4, 104};
  EXPECT_DOUBLE_EQ(lr(0), 0.1);
  EXPECT_DOUBLE_EQ(lr(3), 0.4);
  EXPECT_DOUBLE_EQ(lr(4), 0.4);
  EXPECT_NEAR(lr(54), 0.2, 1e-12);
  EXPECT_NEAR(lr(104), 0.0, 1e-12);
  EXPECT_GT(lr(20), lr(21));
  const resnet::WarmupCosine none{1.0, 0, 10};
  EXPECT_DOUBLE_EQ(none(0), 1.0);
}

TEST(Schedule, DefaultWarmupIsOneEpochAtMostATenthOfTheRun) {
  EXPECT_EQ(resnet::warmup_steps(std::nullopt, 469, 2345), 234);
  EXPECT_EQ(resnet::warmup_steps(std::nullopt, 47, 47), 4);
  EXPECT_EQ(resnet::warmup_steps(std::nullopt, 100, 5000), 100);
  EXPECT_EQ(resnet::warmup_steps(0.5, 100, 300), 50);
  EXPECT_EQ(resnet::warmup_steps(0.0, 100, 300), 0);
  EXPECT_TRUE(contains(
      error_of([] { resnet::warmup_steps(-1.0, 10, 10); }), "must be >= 0"));
}

TEST(Schedule, SetLearningRateReachesEveryGroup) {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({2}, torch::requires_grad());
  torch::optim::SGD sgd(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup({a}),
          torch::optim::OptimizerParamGroup({b})},
      torch::optim::SGDOptions(1.0));
  resnet::set_learning_rate(sgd, 0.25);
  for (auto& group : sgd.param_groups()) {
    EXPECT_DOUBLE_EQ(group.options().get_lr(), 0.25);
  }
}

TEST(Schedule, LearningRatesReadsEveryGroupInOrder) {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({2}, torch::requires_grad());
  auto c = torch::zeros({2}, torch::requires_grad());
  torch::optim::SGD sgd(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup({a}),
          torch::optim::OptimizerParamGroup(
              {b}, std::make_unique<torch::optim::SGDOptions>(0.5)),
          torch::optim::OptimizerParamGroup({c})},
      torch::optim::SGDOptions(0.125));
  EXPECT_EQ(
      resnet::learning_rates(sgd), (std::vector<double>{0.125, 0.5, 0.125}));
  resnet::set_learning_rate(sgd, 0.25);
  EXPECT_EQ(
      resnet::learning_rates(sgd), (std::vector<double>{0.25, 0.25, 0.25}));
  torch::optim::AdamW adamw({a}, torch::optim::AdamWOptions(3e-4));
  EXPECT_EQ(resnet::learning_rates(adamw), std::vector<double>{3e-4});
}

TEST(CheckpointFolder, SavesAndRestoresModelOptimizerAndState) {
  const auto dir = resnet_test::work_dir("training/roundtrip");
  Trained a(1);
  resnet::CheckpointFolder folder(dir.string());
  EXPECT_FALSE(folder.read_state().has_value());
  folder.save(7, *a.model, a.optimizer, {{"best", 0.5}});
  Trained b(2);
  ASSERT_FALSE(same_parameters(a.model, b.model));
  const auto state = folder.load(*b.model, b.optimizer);
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(state->at("step"), 7);
  EXPECT_EQ(state->at("best"), 0.5);
  EXPECT_TRUE(same_parameters(a.model, b.model));
  // The momentum buffers came back too: the next steps agree.
  torch::manual_seed(3);
  a.step();
  torch::manual_seed(3);
  b.step();
  EXPECT_TRUE(same_parameters(a.model, b.model));
  // last.pt holds the weights; the files of older steps go.
  folder.save(9, *a.model, a.optimizer);
  EXPECT_EQ(
      names_in(dir / "checkpoint"),
      (std::vector<std::string>{"model-9.pt", "optimizer-9.pt"}));
  Trained c(4);
  resnet::load_state_dict(*c.model, (dir / "last.pt").string());
  EXPECT_TRUE(same_parameters(a.model, c.model));
}

TEST(CheckpointFolder, AProcessStoppedWhileSavingLeavesTheLastCheckpoint) {
  for (const std::string stop_at : {"model", "optimizer", "state"}) {
    const auto dir = resnet_test::work_dir("training/stopped-" + stop_at);
    Trained a(1);
    resnet::CheckpointFolder folder(dir.string());
    folder.save(3, *a.model, a.optimizer);
    const auto first = fc_weight(a.model);
    a.step();
    std::vector<std::string> seen;
    folder.on_written([&](const std::string& what) {
      seen.push_back(what);
      if (what == stop_at) {
        throw std::runtime_error("stopped");
      }
    });
    EXPECT_THROW(folder.save(4, *a.model, a.optimizer), std::runtime_error);
    EXPECT_EQ(seen.back(), stop_at);
    Trained b(2);
    const auto state = folder.load(*b.model, b.optimizer);
    ASSERT_TRUE(state.has_value()) << stop_at;
    EXPECT_EQ(state->at("step"), 3) << stop_at;
    EXPECT_TRUE(torch::equal(fc_weight(b.model), first));
  }
  // A full save after the interruptions reports each file in order.
  Trained a(1);
  std::vector<std::string> seen;
  resnet::CheckpointFolder folder(
      resnet_test::work_dir("training/order").string());
  folder.on_written([&](const std::string& what) { seen.push_back(what); });
  folder.save(1, *a.model, a.optimizer);
  EXPECT_EQ(seen, (std::vector<std::string>{"model", "optimizer", "state"}));
}

TEST(CheckpointFolder, TemporariesGoAndDamagedStateIsNamed) {
  const auto dir = resnet_test::work_dir("training/damaged");
  std::ofstream(dir / "last.pt.tmp") << "x";
  std::ofstream(dir / "last_state.json.tmp.123") << "x";
  std::ofstream(dir / "keep.txt") << "x";
  resnet::CheckpointFolder folder(dir.string());
  folder.remove_temporaries();
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"keep.txt"}));
  std::ofstream(dir / "last_state.json") << "{\"step\": ";
  Trained a(1);
  EXPECT_TRUE(contains(
      error_of([&] { folder.load(*a.model, a.optimizer); }), "is damaged"));
  std::ofstream(dir / "last_state.json") << "{\"no_step\": 1}";
  EXPECT_TRUE(contains(error_of([&] { folder.read_state(); }), "is damaged"));
  EXPECT_TRUE(
      contains(error_of([] { resnet::CheckpointFolder(""); }), "needs a path"));
  // A run with other settings is refused before anything is loaded.
  folder.save(5, *a.model, a.optimizer, {{"seed", 1}, {"arch", "resnet20"}});
  Trained b(2);
  const auto before = fc_weight(b.model);
  const auto refused = error_of([&] {
    folder.load(*b.model, b.optimizer, {{"arch", "resnet20"}, {"seed", 2}});
  });
  EXPECT_TRUE(contains(refused, "cannot resume")) << refused;
  EXPECT_TRUE(contains(refused, "has seed 1, this one 2")) << refused;
  EXPECT_TRUE(torch::equal(fc_weight(b.model), before));
  EXPECT_EQ(folder.load(*b.model, b.optimizer, {{"seed", 1}})->at("step"), 5);
}

TEST(TrainingLog, WritesRowsAndKeepsOnlyCheckpointedRowsOnResume) {
  const auto dir = resnet_test::work_dir("training/log");
  {
    resnet::TrainingLog log(dir.string(), std::nullopt, 2);
    for (int64_t s = 1; s <= 5; ++s) {
      log.step(s, 1.0 / static_cast<double>(s), 0.1);
    }
    resnet::EpochMetrics m;
    m.epoch = 1;
    m.test_accuracy = 0.5;
    log.epoch(m);
    m.epoch = 2;
    log.epoch(m);
  }
  const auto steps = read_text(dir / "steps.csv");
  EXPECT_EQ(std::count(steps.begin(), steps.end(), '\n'), 6) << steps;
  // Resumed after step 3 (epoch 1 of 2-step epochs): rows 4, 5 and epoch 2
  // are dropped, then the logs continue.
  {
    resnet::TrainingLog log(dir.string(), 3, 2);
    log.step(4, 0.2, 0.1);
  }
  EXPECT_EQ(
      read_text(dir / "steps.csv"),
      "step,loss,lr\n1,1,0.1\n2,0.5,0.1\n3,0.333333333,0.1\n4,0.2,0.1\n");
  const auto metrics = read_text(dir / "metrics.csv");
  EXPECT_TRUE(contains(metrics, "epoch,lr,train_loss"));
  EXPECT_TRUE(contains(metrics, "\n1,0,0,0,0,0.5,0,0\n"));
  EXPECT_FALSE(contains(metrics, "\n2,"));
}

TEST(TrainingLog, DrawsCurvesAsSvgWithoutAShellWhateverTheFolderIsNamed) {
  // A name a shell would split, unquote or run: it is only ever a path.
  const auto parent = resnet_test::work_dir("training/hostile_name");
  const auto dir = parent / "it's a \"run\" $(touch x) `touch y`\nz";
  std::filesystem::create_directories(dir);
  {
    resnet::TrainingLog log(dir.string(), std::nullopt, 1);
    resnet::EpochMetrics m;
    for (int64_t e = 1; e <= 3; ++e) {
      m.epoch = e;
      m.train_loss = 1.0 / static_cast<double>(e);
      m.test_loss = e == 2 ? std::nan("") : 2.0 / static_cast<double>(e);
      m.train_accuracy = 0.5 + 0.1 * static_cast<double>(e);
      m.test_accuracy = 0.4 + 0.1 * static_cast<double>(e);
      log.epoch(m);
    }
  }
  for (const auto& where : {std::filesystem::current_path(), parent, dir}) {
    EXPECT_FALSE(std::filesystem::exists(where / "x")) << where;
    EXPECT_FALSE(std::filesystem::exists(where / "y")) << where;
  }
  const auto svg = read_text(dir / "curves.svg");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_TRUE(contains(svg, "</svg>\n"));
  EXPECT_TRUE(contains(svg, ">loss</text>")) << svg;
  EXPECT_TRUE(contains(svg, ">accuracy (%)</text>")) << svg;
  // Four lines: train and test in each chart; the test loss of epoch 2 (NaN)
  // is left out of its line.
  std::vector<size_t> points;
  for (size_t at = svg.find("points=\""); at != std::string::npos;
       at = svg.find("points=\"", at + 1)) {
    const auto end = svg.find('"', at + 8);
    const auto list = svg.substr(at + 8, end - at - 8);
    points.push_back(
        static_cast<size_t>(std::count(list.begin(), list.end(), ',')));
  }
  EXPECT_EQ(points, (std::vector<size_t>{3, 2, 3, 3})) << svg;
  EXPECT_FALSE(std::filesystem::exists(dir / "curves.png"));
}

TEST(LineCharts, EscapeTextAndSurviveEmptyAndFlatSeries) {
  const auto svg = resnet::line_charts_svg(
      {{"a <b> & \"c\"", "x", {{"flat", {1, 2}, {5, 5}}}},
       {"empty", "x", {{"none", {}, {}}, {"gap", {1}, {std::nan("")}}}}});
  EXPECT_TRUE(contains(svg, ">a &lt;b&gt; &amp; &quot;c&quot;</text>")) << svg;
  EXPECT_FALSE(contains(svg, "nan")) << svg;
  EXPECT_FALSE(contains(svg, "inf")) << svg;
}

TEST(ConfusionMatrix, CountsAccuracyAndPerClass) {
  resnet::ConfusionMatrix m(3);
  // Targets 0 0 1 2 2; predictions 0 1 1 2 0.
  const auto logits = torch::tensor(
      {{5.f, 0.f, 0.f},
       {0.f, 5.f, 0.f},
       {0.f, 5.f, 0.f},
       {0.f, 0.f, 5.f},
       {5.f, 0.f, 0.f}});
  m.add(logits, torch::tensor({0, 0, 1, 2, 2}, torch::kLong));
  EXPECT_EQ(m.total(), 5);
  EXPECT_DOUBLE_EQ(m.accuracy(), 0.6);
  EXPECT_EQ(m.per_class(), (std::vector<double>{0.5, 1.0, 0.5}));
  EXPECT_EQ(m.to_json().dump(), "[[1,1,0],[0,1,0],[1,0,1]]");
  m.add(torch::tensor({2}, torch::kLong), torch::tensor({1}, torch::kLong));
  EXPECT_EQ(m.counts()[1][2].item<int64_t>(), 1);
  const auto text = m.to_string({"cat", "dog", "eel"});
  EXPECT_TRUE(contains(text, "dog")) << text;
  EXPECT_TRUE(contains(text, "50.00%")) << text;
  EXPECT_TRUE(contains(
      error_of([&] {
        m.add(torch::zeros({2, 4}), torch::zeros({2}));
      }),
      "expects logits [N, 3]"));
  EXPECT_TRUE(contains(
      error_of([&] {
        m.add(torch::zeros({1, 3}), torch::tensor({3}, torch::kLong));
      }),
      "a target outside [0, 3)"));
  EXPECT_DOUBLE_EQ(resnet::ConfusionMatrix(2).accuracy(), 0.0);
}

TEST(ConfusionMatrix, SummaryHoldsClassesPerClassAndMatrix) {
  resnet::ConfusionMatrix m(2);
  m.add(torch::tensor({0, 1, 1}, torch::kLong), torch::tensor({0, 0, 1}));
  EXPECT_EQ(
      m.summary({"cat", "dog"}).dump(),
      R"({"classes":["cat","dog"],"confusion_matrix":[[1,1],[0,1]],)"
      R"("per_class_accuracy":[0.5,1.0],"test_accuracy":0.6666666666666666,)"
      R"("test_images":3,"test_loss":0.0})");
}

TEST(ConfusionMatrix, TotalsOfPartsSumToTheWhole) {
  const auto logits = torch::tensor(
      {{2.f, 0.f, 1.f}, {0.f, 1.f, 3.f}, {1.f, 1.f, 0.f}, {0.f, 4.f, 0.f}});
  const auto targets = torch::tensor({0, 2, 1, 1}, torch::kLong);
  resnet::ConfusionMatrix whole(3), first(3), second(3);
  whole.add(logits, targets);
  first.add(logits.slice(0, 0, 1), targets.slice(0, 0, 1));
  second.add(logits.slice(0, 1), targets.slice(0, 1));
  const auto totals = first.totals() + second.totals();
  EXPECT_EQ(totals.sizes(), (std::vector<int64_t>{10}));
  const auto summed = resnet::ConfusionMatrix::from_totals(totals);
  EXPECT_TRUE(torch::equal(summed.counts(), whole.counts()));
  EXPECT_NEAR(summed.loss(), whole.loss(), 1e-6);
  EXPECT_GT(summed.loss(), 0.0);
  for (const auto& bad :
       {torch::zeros({9}), torch::zeros({0}), torch::zeros({2, 5})}) {
    EXPECT_TRUE(contains(
        error_of([&] { resnet::ConfusionMatrix::from_totals(bad); }),
        "from_totals expects k * k + 1 values"));
  }
  auto half = whole.totals();
  half[0] = 0.5;
  EXPECT_TRUE(contains(
      error_of([&] { resnet::ConfusionMatrix::from_totals(half); }),
      "counts must be whole and non-negative"));
}

TEST(EpochMetrics, FromTotalsAndEvaluationAndAsText) {
  resnet::EpochTotals train;
  train.add(
      0.5, torch::tensor({{1.f, 0.f}, {1.f, 0.f}}), torch::tensor({0, 1}));
  resnet::ConfusionMatrix test(2);
  test.add(torch::tensor({{0.f, 3.f}}), torch::tensor({1}));
  const auto m = resnet::EpochMetrics::of(3, 0.05, train, test, 12.5, 640);
  EXPECT_EQ(m.epoch, 3);
  EXPECT_DOUBLE_EQ(m.lr, 0.05);
  EXPECT_DOUBLE_EQ(m.train_loss, 0.5);
  EXPECT_DOUBLE_EQ(m.train_accuracy, 0.5);
  EXPECT_NEAR(m.test_loss, std::log1p(std::exp(-3.0)), 1e-6);
  EXPECT_DOUBLE_EQ(m.test_accuracy, 1.0);
  EXPECT_DOUBLE_EQ(m.seconds, 12.5);
  EXPECT_DOUBLE_EQ(m.images_per_second, 640);
  EXPECT_EQ(
      m.to_string(5),
      "epoch 3/5: test loss 0.0486 accuracy 100.00% (train 50.00%)");
}

TEST(RunProgress, RoundTripsThroughJson) {
  resnet::RunProgress p;
  p.step = 17;
  p.best = 0.875;
  p.seconds = 3.25;
  p.epoch.add(2.0, torch::tensor({{0.f, 1.f}}), torch::tensor({1}));
  const nlohmann::json j = p;
  const auto q = j.get<resnet::RunProgress>();
  EXPECT_EQ(q.step, 17);
  EXPECT_DOUBLE_EQ(q.best, 0.875);
  EXPECT_DOUBLE_EQ(q.seconds, 3.25);
  EXPECT_DOUBLE_EQ(q.epoch.loss, 2.0);
  EXPECT_EQ(q.epoch.correct, 1);
  EXPECT_EQ(q.epoch.seen, 1);
  EXPECT_DOUBLE_EQ(resnet::RunProgress().best, -1);
}

TEST(Interrupt, CtrlCBecomesARequestOnceThenTheDefault) {
  resnet::stop_on_interrupt();
  EXPECT_FALSE(resnet::interrupt_requested());
  std::raise(SIGINT);
  EXPECT_TRUE(resnet::interrupt_requested());
  // The handler gave SIGINT back to the default action (end the program).
  const auto previous = std::signal(SIGINT, SIG_IGN);
  EXPECT_EQ(previous, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  resnet::stop_on_interrupt(); // a new run starts without a request
  EXPECT_FALSE(resnet::interrupt_requested());
  std::signal(SIGINT, SIG_DFL);
}

TEST(CrashPoint, KillsTheProcessOnlyAtTheNamedPoint) {
  ::setenv("RESNET_TEST_CRASH_AT", "step:3", 1);
  resnet::crash_point("step:2", "RESNET_TEST_CRASH_AT"); // not this one
  resnet::crash_point("step:3"); // another variable
  EXPECT_EXIT(
      resnet::crash_point("step:3", "RESNET_TEST_CRASH_AT"),
      testing::KilledBySignal(SIGKILL),
      "");
  ::unsetenv("RESNET_TEST_CRASH_AT");
}

TEST(ErrorMessage, LibTorchErrorsWithoutTheirBacktrace) {
  try {
    TORCH_CHECK(false, "a checked condition failed");
  } catch (const std::exception& e) {
    EXPECT_EQ(resnet::error_message(e), "a checked condition failed");
  }
  EXPECT_EQ(resnet::error_message(std::runtime_error("plain")), "plain");
}

TEST(ProgressLine, PrintsQuartersToALogAndTheDuration) {
  EXPECT_EQ(resnet::format_duration(75.9), "1:15");
  EXPECT_EQ(resnet::format_duration(-3), "0:00");
  testing::internal::CaptureStdout();
  {
    resnet::ProgressLine bar("epoch 1/2", 8);
    for (int64_t i = 1; i <= 8; ++i) {
      bar.update(i, "loss 1.0", 4 * i);
    }
    resnet::ProgressLine quiet("epoch 2/2", 8, /*enabled=*/false);
    quiet.update(8, "x", 1);
  }
  const auto out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 4) << out;
  EXPECT_TRUE(contains(out, "epoch 1/2 [########################] 8/8")) << out;
  EXPECT_FALSE(contains(out, "epoch 2/2")) << out;
}

TEST(TrainStep, AnEagerStepIsZeroGradForwardBackwardStep) {
  Trained a(5), b(5);
  ASSERT_TRUE(same_parameters(a.model, b.model));
  const auto x = torch::randn({4, 1, 8, 8});
  const auto y = torch::tensor({0, 1, 2, 1});
  const auto loss_of = [](resnet::AnyResNet& m) {
    return [&m](const torch::Tensor& images, const torch::Tensor& targets) {
      const auto logits = m->forward(images);
      return std::pair(torch::cross_entropy_loss(logits, targets), logits);
    };
  };
  resnet::TrainStep step(*a.model, a.optimizer, loss_of(a.model));
  const auto [loss, logits] = step(x, y);
  b.optimizer.zero_grad();
  const auto [b_loss, b_logits] = loss_of(b.model)(x, y);
  b_loss.backward();
  b.optimizer.step();
  EXPECT_TRUE(same_parameters(a.model, b.model));
  EXPECT_TRUE(torch::equal(logits, b_logits.detach()));
  EXPECT_FALSE(loss.requires_grad());
  EXPECT_EQ(step.graph(), nullptr);
  // A CUDA graph asked for on the CPU is refused before any step.
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::TrainStep(
            *a.model,
            a.optimizer,
            loss_of(a.model),
            resnet::TrainStepOptions().cuda_graph(true));
      }),
      "captured as a CUDA graph replays CUDA work, and this one runs on cpu"));
}

TEST(Evaluate, CountsEveryExampleOnce) {
  torch::manual_seed(0);
  const auto images = torch::randint(0, 256, {10, 1, 4, 4}).to(torch::kByte);
  const auto targets = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1, 2, 0});
  resnet::data::ImageDataset data(images, targets, {"a", "b", "c"}, "tiny");
  resnet::distributed::Group alone{resnet::distributed::Environment{}};
  int64_t batches = 0;
  // Predicts class 0 always: right for the four zeros.
  const auto m = resnet::evaluate(
      data,
      3,
      resnet::data::LoaderOptions().batch_size(4).workers(0),
      alone,
      [&](const resnet::data::Batch& b) {
        ++batches;
        auto logits = torch::zeros({b.images.size(0), 3});
        logits.select(1, 0).fill_(1);
        return logits;
      });
  EXPECT_EQ(batches, 3);
  EXPECT_EQ(m.total(), 10);
  EXPECT_DOUBLE_EQ(m.accuracy(), 0.4);
  EXPECT_EQ(alone.share_of(12, "the batch"), 12);
}

TEST(BatchPreparation, NormalizesAndAugmentsTheSameBatchTheSameWay) {
  torch::manual_seed(1);
  resnet::data::Batch b;
  b.images = torch::randint(0, 256, {4, 1, 8, 8}).to(torch::kByte);
  b.targets = torch::tensor({0, 1, 0, 1});
  b.epoch = 3;
  b.index = 2;
  resnet::data::BatchPreparation prepare;
  prepare.mean = {0.5};
  prepare.std = {0.25};
  prepare.classes = 2;
  const auto plain = (b.images.to(torch::kFloat) / 255 - 0.5) / 0.25;
  auto [x, y] = prepare(b, true); // no augmentation set: as in evaluation
  EXPECT_TRUE(torch::allclose(x, plain));
  EXPECT_TRUE(x.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::equal(y, b.targets));
  prepare.augment = resnet::data::AugmentOptions().padding(2).flip(0.5);
  const auto first = prepare(b, true).first;
  EXPECT_TRUE(torch::equal(first, prepare(b, true).first)); // seeded
  EXPECT_FALSE(torch::allclose(first, plain));
  EXPECT_TRUE(torch::allclose(prepare(b, false).first, plain));
  b.index = 3; // another batch of the run: other crops
  EXPECT_FALSE(torch::equal(first, prepare(b, true).first));
}

TEST(CheckpointFolder, ResumesARunWhereItStood) {
  const auto dir = resnet_test::work_dir("training/resume");
  Trained a(6), b(7);
  resnet::CheckpointFolder folder(dir.string());
  EXPECT_FALSE(folder.resume(*b.model, b.optimizer, {{"arch", "x"}}));
  resnet::RunProgress at;
  at.step = 12;
  at.best = 0.75;
  at.seconds = 3.5;
  folder.save(at, *a.model, a.optimizer, {{"arch", "x"}});
  EXPECT_TRUE(contains(
      error_of([&] {
        folder.resume(*b.model, b.optimizer, {{"arch", "y"}});
      }),
      "has arch \"x\", this one \"y\""));
  const auto back = folder.resume(*b.model, b.optimizer, {{"arch", "x"}});
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->step, 12);
  EXPECT_EQ(back->best, 0.75);
  EXPECT_TRUE(same_parameters(a.model, b.model));
  EXPECT_EQ(resnet::describe_resume(back, "out"), "resuming out at step 12");
  EXPECT_EQ(
      resnet::describe_resume(std::nullopt, "out"),
      "from the start: no checkpoint yet in out");
  const auto schedule = resnet::warmup_cosine(0.4, 10, 20, 0.5);
  EXPECT_EQ(schedule.total, 200);
  EXPECT_EQ(schedule.warmup, 10);
  EXPECT_EQ(resnet::warmup_cosine(0.4, 10, 20).warmup, 20);
}

TEST(FineTune, ChoosesTheWeightsArchitectureAndStemWhereLeftOpen) {
  using resnet::Stem;
  const auto dir = resnet_test::work_dir("training/choose");
  auto c = resnet::choose_network("", "auto", "", 28);
  EXPECT_EQ(c.architecture, "resnet20");
  EXPECT_EQ(c.stem, Stem::Cifar);
  c = resnet::choose_network("resnet18", "auto", "", 224);
  EXPECT_EQ(c.architecture, "resnet18");
  EXPECT_EQ(c.stem, Stem::ImageNet);
  // Weights described by a config.json beside them: theirs, where left open.
  fs::create_directories(dir / "described");
  const auto described = (dir / "described" / "best.pt").string();
  resnet::save_state_dict(
      {{"conv1.weight", torch::zeros({64, 3, 7, 7})}}, described);
  resnet::ModelConfig config;
  config.architecture = "resnet34";
  config.stem = "imagenet";
  resnet::write_model_config(
      (dir / "described" / "config.json").string(), config);
  c = resnet::choose_network("", "auto", described, 28);
  EXPECT_EQ(c.architecture, "resnet34");
  EXPECT_EQ(c.stem, Stem::ImageNet);
  c = resnet::choose_network("resnet18", "cifar", described, 28); // given
  EXPECT_EQ(c.architecture, "resnet18");
  EXPECT_EQ(c.stem, Stem::Cifar);
  config.stem.clear(); // the architecture's own: torchvision's ImageNet stem
  resnet::write_model_config(
      (dir / "described" / "config.json").string(), config);
  EXPECT_EQ(
      resnet::choose_network("", "auto", described, 32).stem, Stem::ImageNet);
  // A bare file: the stem told from its first convolution's kernel.
  const auto bare7 = (dir / "bare7.safetensors").string();
  const auto bare3 = (dir / "bare3.pt").string();
  resnet::save_state_dict(
      {{"conv1.weight", torch::zeros({64, 3, 7, 7})}}, bare7);
  resnet::save_state_dict(
      {{"conv1.weight", torch::zeros({16, 1, 3, 3})}}, bare3);
  c = resnet::choose_network("resnet18", "auto", bare7, 28);
  EXPECT_EQ(c.architecture, "resnet18");
  EXPECT_EQ(c.stem, Stem::ImageNet);
  c = resnet::choose_network("", "auto", bare3, 224);
  EXPECT_EQ(c.architecture, "resnet20"); // nothing says: the fallback
  EXPECT_EQ(c.stem, Stem::Cifar);
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::choose_network("", "auto", (dir / "none.pt").string(), 28);
      }),
      "none.pt"));
}

TEST(FineTune, NormalizesAsGivenElseAsTheWeightsElseAsTheData) {
  resnet::data::BatchPreparation prepare;
  prepare.mean = {0.1, 0.2, 0.3};
  prepare.std = {0.4, 0.5, 0.6};
  resnet::FineTune none; // no weights: the data's unless given
  auto p = prepare;
  none.normalize(p);
  EXPECT_EQ(p.mean, prepare.mean);
  EXPECT_EQ(p.std, prepare.std);
  none.normalize(p, {0.5}, {0.25, 0.5, 1});
  EXPECT_EQ(p.mean, std::vector<double>({0.5, 0.5, 0.5}));
  EXPECT_EQ(p.std, std::vector<double>({0.25, 0.5, 1}));
  resnet::FineTune tuned;
  tuned.config = resnet::ModelConfig();
  tuned.config->preprocess.mean({0.485, 0.456, 0.406}).std({0.2, 0.2, 0.2});
  p = prepare;
  tuned.normalize(p, {}, {0.3}); // the weights' mean, the given std
  EXPECT_EQ(p.mean, std::vector<double>({0.485, 0.456, 0.406}));
  EXPECT_EQ(p.std, std::vector<double>({0.3, 0.3, 0.3}));
  p.mean = {0.0}; // grayscale: RGB's averaged
  p.std = {1.0};
  tuned.normalize(p);
  ASSERT_EQ(p.mean.size(), 1u);
  EXPECT_NEAR(p.mean[0], (0.485 + 0.456 + 0.406) / 3, 1e-12);
  EXPECT_NEAR(p.std[0], 0.2, 1e-12);
  p = prepare;
  EXPECT_TRUE(contains(
      error_of([&] {
        none.normalize(p, {0.5, 0.5});
      }),
      "the mean has 2 values for images of 3 channels"));
  EXPECT_TRUE(contains(
      error_of([&] { none.normalize(p, {}, {0.0}); }), "std must be > 0"));
}

TEST(FineTune, NewClassifierAdaptedInputFrozenStagesAndSlowerBackbone) {
  const auto dir = resnet_test::work_dir("training/fine_tune");
  torch::manual_seed(3);
  const auto rgb = resnet::create(
      "resnet20", resnet::ResNetOptions().num_classes(10).in_channels(3));
  const auto file = (dir / "rgb10.pt").string();
  resnet::save_state_dict(*rgb, file);
  auto gray = resnet::create(
      "resnet20", resnet::ResNetOptions().num_classes(4).in_channels(1));
  const auto tune = resnet::fine_tune(
      *gray, file, resnet::FineTuneOptions().freeze("2").backbone_lr(0.1));
  EXPECT_EQ(tune.skipped, std::vector<std::string>({"fc.weight", "fc.bias"}));
  ASSERT_EQ(tune.adapted.size(), 1u);
  EXPECT_TRUE(contains(tune.adapted[0], "conv1.weight 3 -> 1 input channels"));
  const auto params = gray->named_parameters();
  EXPECT_TRUE(torch::allclose(
      params["conv1.weight"],
      rgb->named_parameters()["conv1.weight"].sum(1, true)));
  EXPECT_TRUE(torch::equal(
      params["layer3.0.conv1.weight"],
      rgb->named_parameters()["layer3.0.conv1.weight"]));
  for (const auto& item : params) {
    const auto& n = item.key();
    const bool frozen = n.rfind("layer3", 0) != 0 && n.rfind("fc.", 0) != 0;
    EXPECT_EQ(item.value().requires_grad(), !frozen) << n;
  }
  EXPECT_FALSE(tune.frozen.empty());
  const auto groups = tune.groups(*gray);
  ASSERT_EQ(groups.size(), 2u); // the classifier, then the rest at 0.1x
  EXPECT_EQ(groups[0].params().size(), 2u);
  EXPECT_EQ(tune.lr_factors, std::vector<double>({1.0, 0.1}));
  resnet::train_mode(*gray, false); // frozen layers' batch norms stay
  for (const auto& item : gray->named_modules()) {
    const auto& m = *item.value();
    if (m.name().find("BatchNorm") != std::string::npos &&
        !m.parameters(false).empty()) { // a norm, not a block holding some
      EXPECT_EQ(item.value()->is_training(), item.key().rfind("layer3", 0) == 0)
          << item.key();
    }
  }
  EXPECT_TRUE(contains(tune.describe(), "pretrained layers at 0.1x"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::fine_tune(*gray, file, resnet::FineTuneOptions().freeze("5"));
      }),
      "freeze is none, stem, 1 to 4 or backbone"));
}

} // namespace test_training
