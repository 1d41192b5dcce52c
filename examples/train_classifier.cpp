// Trains a ResNet image classifier and evaluates it; --help lists the flags.
// Data: Fashion-MNIST (the default), IDX, CIFAR-10/100 or image folders
// DIR/{train,test}/<class>/. Into --out go metrics.csv, steps.csv, curves.svg,
// best.pt, last.pt, config.json (for classify), summary.json and checkpoint/
// (Ctrl-C saves, --resume continues exactly). Under torchrun it trains
// data-parallel over c10d. Builds alone with find_package(resnet) and CLI11,
// linking resnet::resnet CLI11::CLI11 ZLIB::ZLIB PNG::PNG libturbojpeg (several
// processes also need RESNET_WITH_C10D=1 USE_DISTRIBUTED USE_C10D_GLOO:
// resnet/train/distributed.h).

#include <resnet/data/datasets.h>
#include <resnet/data/prepare.h>
#include <resnet/resnet.h>
#include <resnet/train.h>

#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>

namespace rd = resnet::data;
using nlohmann::json;

namespace {

struct Args {
  std::string data = "/usr/share/datasets/fashion-mnist", dataset;
  std::string out = "runs/train", arch, stem = "auto", device;
  std::string pretrained, freeze = "none";
  int64_t epochs = 5, batch_size = 128, pad = 2, image_size = 0, workers = 2;
  int64_t threads = 0, train_limit = 0, test_limit = 0, stop_after = 0;
  double lr = 0.1, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = -1;
  double label_smoothing = 0.1, erasing = 0, mixup = 0, cutmix = 0;
  double timeout = 300, backbone_lr = 1;
  bool no_nesterov = false, no_flip = false, no_augment = false, resume = false;
  bool sync_bn = false, cuda_graph = false, freeze_bn = false;
  std::vector<double> mean, std; // normalization; default: data or weights
  uint64_t seed = 0;
};

// A command-line problem, or --help: main prints it and exits with `code`.
struct UsageError {
  std::string problem;
  int code = 2;
};

Args parse_args(int argc, char** argv) {
  Args a;
  CLI::App app("Trains a ResNet image classifier.", "train_classifier");
  app.option_defaults()->always_capture_default(); // --help shows defaults
  const auto opt = [&](auto&&... o) { return app.add_option(o...); };
  const auto count = CLI::Range(int64_t{1}, int64_t{1000000000000000});
  const auto unit = CLI::Range(0.0, 1.0), positive = CLI::NonNegativeNumber;
  const auto alpha = CLI::Range(0.0, 1e3), warmup = CLI::Range(-1.0, 1e6);
  const auto kinds = CLI::IsMember(rd::dataset_kinds());
  const auto stems = CLI::IsMember({"auto", "cifar", "imagenet"});
  opt("--data", a.data, "dataset folder");
  opt("--dataset", a.dataset, "(default: told from the files)")->check(kinds);
  opt("--arch", a.arch, "of resnet::architectures(); the weights', resnet20");
  opt("--stem", a.stem, "auto: the weights', cifar to 64 pixels")->check(stems);
  opt("--epochs", a.epochs, "")->check(count);
  opt("--batch-size", a.batch_size, "")->check(count);
  opt("--lr", a.lr, "peak learning rate")->check(positive);
  opt("--momentum", a.momentum, "")->check(unit);
  app.add_flag("--no-nesterov", a.no_nesterov, "plain momentum");
  opt("--weight-decay", a.weight_decay, "")->check(positive);
  opt("--warmup-epochs", a.warmup_epochs, "-1: 1, <= 10%")->check(warmup);
  opt("--label-smoothing", a.label_smoothing, "")->check(CLI::Range(0.0, 0.99));
  opt("--erasing", a.erasing, "random-erasing probability")->check(unit);
  opt("--pad", a.pad, "random-crop padding")->check(CLI::Range(0, 1024));
  opt("--mixup", a.mixup, "mixup alpha (0: off)")->check(alpha);
  opt("--cutmix", a.cutmix, "cutmix alpha (0: off)")->check(alpha);
  app.add_flag("--no-flip", a.no_flip, "no flips (always off for digits)");
  app.add_flag("--no-augment", a.no_augment, "no augmentation at all");
  opt("--image-size", a.image_size, "side; 0: the data's")
      ->check(CLI::Range(0, 65536));
  opt("--device", a.device, "cpu, cuda or cuda:N (default: cuda if any)");
  opt("--threads", a.threads, "0: OMP_NUM_THREADS")->check(CLI::Range(0, 4096));
  opt("--workers", a.workers, "batch threads")->check(CLI::Range(0, 64));
  opt("--seed", a.seed, "")->check(CLI::Range(0.0, 1.8e19));
  opt("--timeout", a.timeout, "seconds to wait for other processes")
      ->check(CLI::Range(1e-3, 1e7));
  opt("--out", a.out, "output folder");
  app.add_flag("--resume", a.resume, "continue the run in --out");
  app.add_flag("--sync-bn", a.sync_bn, "batch norm over all processes");
  app.add_flag("--cuda-graph", a.cuda_graph, "steps replayed as a CUDA graph");
  opt("--pretrained", a.pretrained, "start from weights: a file or a name");
  opt("--freeze", a.freeze, "")->check(CLI::IsMember(resnet::freeze_choices()));
  opt("--backbone-lr", a.backbone_lr, "backbone's lr factor")->check(unit);
  app.add_flag("--freeze-bn", a.freeze_bn, "keep batch-norm statistics");
  opt("--mean", a.mean, "per channel (default: the data's or weights')");
  opt("--std", a.std, "per channel, as --mean");
  opt("--train-limit", a.train_limit, "the first N train images")->check(count);
  opt("--test-limit", a.test_limit, "the first N test images")->check(count);
  opt("--stop-after", a.stop_after, "stop after N steps, as Ctrl-C")
      ->check(count);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) { // --help included
    const bool help = e.get_exit_code() == 0;
    throw UsageError{
        (help ? "" : e.what() + std::string("\n")) + app.help(), help ? 0 : 2};
  }
  return a;
}

// Everything the steps of main share.
struct Run {
  Args args;
  std::unique_ptr<resnet::distributed::Group> group; // torchrun's, or one
  bool talk = true; // rank 0 talks and writes
  torch::Device device = torch::kCPU;
  rd::TrainTest data;
  rd::BatchPreparation prepare; // normalized, augmented in training
  int64_t classes = 0, steps_per_epoch = 0;
  resnet::AnyResNet model = nullptr;
  resnet::ModelConfig config; // config.json: what classify needs
  resnet::FineTune tune; // --pretrained
  std::unique_ptr<resnet::ForeachSGD> optimizer;
  std::unique_ptr<resnet::TrainStep> step; // eager, or a CUDA graph
  resnet::WarmupCosine lr;
  std::unique_ptr<resnet::TrainingLog> log;
  resnet::RunProgress at; // saved in checkpoints
  std::optional<resnet::ConfusionMatrix> test; // the last evaluation
};

void load_data(Run& r) {
  const auto& a = r.args;
  r.data = rd::open_dataset(
               a.data, a.dataset, rd::ImageFolderOptions().size(a.image_size))
               .head(a.train_limit, a.test_limit);
  auto augment = rd::AugmentOptions().padding(a.pad).flip(a.no_flip ? 0 : 0.5);
  augment.erasing().p(a.erasing);
  augment.mix().mixup_alpha(a.mixup).cutmix_alpha(a.cutmix).label_smoothing(
      a.label_smoothing);
  r.prepare = rd::batch_preparation(
      r.data, a.no_augment ? std::nullopt : std::optional(augment), a.seed);
  r.classes = r.prepare.classes;
  if (r.talk) { // the kind, if told from the files: --dataset chooses
    std::cout << "data: " << r.data.describe() << " in " << a.data << "\n";
  }
}

void build_model(Run& r) {
  auto& a = r.args; // --arch, --stem auto: the weights' where they say
  const auto net = resnet::choose_network(
      a.arch, a.stem, a.pretrained, r.data.train.height());
  a.arch = net.architecture;
  torch::manual_seed(a.seed);
  const auto options = resnet::ResNetOptions()
                           .num_classes(r.classes)
                           .in_channels(r.data.train.channels())
                           .stem(net.stem);
  r.model = a.sync_bn
      ? resnet::create<resnet::distributed::SyncBatchNorm2d>(a.arch, options)
      : resnet::create(a.arch, options);
  resnet::distributed::synchronize_batch_norm(*r.model, *r.group);
  r.model->to(r.device);
  resnet::to_channels_last(*r.model); // faster on GPUs and oneDNN CPUs
  if (!a.pretrained.empty()) {
    r.tune = resnet::fine_tune(
        *r.model,
        a.pretrained,
        resnet::FineTuneOptions().freeze(a.freeze).backbone_lr(a.backbone_lr));
  }
  r.tune.normalize(r.prepare, a.mean, a.std); // given, the weights' or data's
  r.config = resnet::trained_config(a.arch, options, r.data.train, r.prepare);
  r.optimizer = std::make_unique<resnet::ForeachSGD>(
      r.tune.groups(*r.model),
      torch::optim::SGDOptions(a.lr)
          .momentum(a.momentum)
          .nesterov(!a.no_nesterov && a.momentum > 0)
          .weight_decay(a.weight_decay));
  r.lr =
      resnet::warmup_cosine(a.lr, a.epochs, r.steps_per_epoch, a.warmup_epochs);
  if (r.talk) {
    std::cout << "model: " << a.arch << " (" << resnet::to_string(net.stem)
              << " stem), " << r.device << (r.device.is_cuda() ? " bf16" : "")
              << " channels_last, " << torch::get_num_threads() << " threads x "
              << r.group->size() << " processes\n"
              << r.tune.describe();
  }
}

json run_identity(const Run& r) { // what a resumed run must share
  return {
      {"arch", r.args.arch},
      {"dataset", r.data.kind},
      {"seed", r.args.seed},
      {"batch_size", r.args.batch_size}};
}

void save_checkpoint(Run& r) {
  resnet::CheckpointFolder(r.args.out)
      .save(r.at, *r.model, *r.optimizer, run_identity(r));
}

// --resume: the last complete checkpoint if there is one; its step.
std::optional<int64_t> resume(Run& r) {
  const auto saved =
      resnet::CheckpointFolder(r.args.out)
          .resume(*r.model, *r.optimizer, run_identity(r), r.talk);
  r.at = saved.value_or(r.at);
  if (r.talk) {
    std::cout << resnet::describe_resume(saved, r.args.out) << "\n";
  }
  return saved ? std::optional(r.at.step) : std::nullopt;
}

torch::Tensor forward(Run& r, const torch::Tensor& x) {
  resnet::Autocast bf16(torch::kCUDA, torch::kBFloat16, r.device.is_cuda());
  return r.model->forward(x).to(torch::kFloat);
}

void evaluate(Run& r) {
  r.model->eval();
  const auto options =
      rd::LoaderOptions()
          .batch_size(std::max<int64_t>(r.args.batch_size, 256))
          .workers(std::min<int64_t>(r.args.workers, 1))
          .device(r.device);
  r.test = resnet::evaluate(
      r.data.test, r.classes, options, *r.group, [&r](const rd::Batch& b) {
        return forward(r, r.prepare(b, false).first);
      });
}

// Trains to the end of the current epoch. Returns the images per second, or
// nullopt when stopped (Ctrl-C, --stop-after) before the end.
std::optional<double> train_epoch(Run& r, rd::Loader& loader) {
  static int64_t steps_in_process = 0;
  auto& at = r.at;
  const int64_t epoch = at.step / r.steps_per_epoch;
  loader.start_epoch(epoch, at.step % r.steps_per_epoch);
  resnet::train_mode(*r.model, r.args.freeze_bn);
  const auto label = "epoch " + std::to_string(epoch + 1) + "/" +
      std::to_string(r.args.epochs);
  resnet::ProgressLine bar(label, r.steps_per_epoch, r.talk, "img");
  const double seconds_before = at.seconds;
  int64_t images = 0;
  auto t0 = std::chrono::steady_clock::now(); // waiting for data counts too
  while (auto b = loader.next()) {
    const auto [x, y] = r.prepare(*b, true);
    const double lr = r.lr(at.step);
    resnet::set_learning_rate(*r.optimizer, lr, r.tune.lr_factors);
    const auto [loss, logits] = (*r.step)(x, y);
    // The step over all the processes, and whether any of them stops.
    const auto step = at.epoch.add_step(
        loss,
        logits,
        b->targets,
        resnet::interrupt_requested() ||
            ++steps_in_process == r.args.stop_after,
        *r.group);
    TORCH_CHECK(
        std::isfinite(step.loss), "the loss diverged; try a lower --lr");
    images += step.images;
    at.seconds += resnet::lap(t0);
    if (r.log) {
      r.log->step(at.step + 1, step.loss, lr);
    }
    ++at.step;
#ifdef RESNET_CRASH_TESTS // the tests' build: RESNET_CRASH_AT=step:N
    resnet::crash_point("step:" + std::to_string(at.step));
#endif
    bar.update(b->index + 1, at.epoch.to_string(), images);
    if (step.stop) {
      return std::nullopt;
    }
  }
  return static_cast<double>(images) /
      std::max(at.seconds - seconds_before, 1e-9);
}

// End of an epoch: evaluate, record, keep the best and the last.
void end_epoch(Run& r, double images_per_second) {
  evaluate(r);
  auto& at = r.at;
  const auto m = resnet::EpochMetrics::of(
      at.step / r.steps_per_epoch,
      r.lr(at.step - 1),
      at.epoch,
      *r.test,
      at.seconds,
      images_per_second);
  at.epoch = {};
  if (!r.talk) {
    return;
  }
  std::cout << m.to_string(r.args.epochs) << "\n";
  r.log->epoch(m); // metrics.csv and curves.svg
  if (m.test_accuracy > at.best) {
    at.best = m.test_accuracy;
    resnet::save_state_dict(*r.model, r.args.out + "/best.pt");
  }
  resnet::write_model_config(r.args.out + "/config.json", r.config);
  save_checkpoint(r);
}

void report(const Run& r, double wall) {
  const auto& classes = r.data.train.classes();
  std::cout << "\n" << r.test->to_string(classes);
  json summary = run_identity(r);
  summary.update(
      {{"data", r.args.data},
       {"epochs", r.args.epochs},
       {"best_test_accuracy", r.at.best},
       {"train_images", *r.data.train.size()},
       {"seconds", wall},
       {"training_seconds", r.at.seconds},
       {"device", r.device.str()},
       {"cuda_graph", r.args.cuda_graph},
       {"threads", torch::get_num_threads()}});
  summary.update(r.test->summary(classes));
  resnet::write_file_atomically(
      r.args.out + "/summary.json", summary.dump(2) + "\n");
  std::cout << std::fixed << std::setprecision(2) << "\ntest accuracy "
            << 100 * r.test->accuracy() << "% after " << r.args.epochs
            << " epochs (" << r.args.arch << ", "
            << resnet::format_duration(wall) << " wall time); results in "
            << r.args.out << "\n";
}

} // namespace

int main(int argc, char** argv) try {
  const auto wall_start = std::chrono::steady_clock::now();
  Run r;
  r.args = parse_args(argc, argv);
  const auto& a = r.args;
  resnet::set_num_threads(a.threads);
  r.group = resnet::distributed::join_from_environment(a.timeout);
  r.talk = r.group->rank() == 0;
  r.device =
      resnet::distributed::process_device(a.device, r.group->environment());
  resnet::enable_cpu_memory_cache(r.device); // reusing freed memory: faster
  load_data(r);
  rd::Loader loader(
      r.data.train,
      rd::LoaderOptions()
          .batch_size(r.group->share_of(a.batch_size, "--batch-size"))
          .seed(a.seed)
          .shard(r.group->rank(), r.group->size())
          .workers(a.workers)
          .device(r.device));
  r.steps_per_epoch = loader.batches_per_epoch();
  build_model(r);
  std::filesystem::create_directories(a.out);
  const auto resumed = a.resume ? resume(r) : std::nullopt;
  r.group->expect_same(r.at.step, "step to resume from (is --out shared?)");
  const auto loss = [&r](const torch::Tensor& x, const torch::Tensor& y) {
    const auto logits = forward(r, x);
    return std::pair(
        resnet::cross_entropy(logits, y, r.args.label_smoothing), logits);
  };
  // Rank 0's weights to all; the gradients averaged as the device suits.
  r.step = std::make_unique<resnet::TrainStep>(
      *r.model,
      *r.optimizer,
      loss,
      resnet::TrainStepOptions()
          .cuda_graph(a.cuda_graph)
          .device(r.device)
          .group(r.group.get()));
  if (r.talk) {
    r.log = std::make_unique<resnet::TrainingLog>(
        a.out, resumed, r.steps_per_epoch);
  }
  resnet::stop_on_interrupt();
  while (r.at.step < r.lr.total) {
    const auto speed = train_epoch(r, loader);
    const bool ctrl_c = resnet::interrupt_requested();
    if (!speed && r.talk) { // Ctrl-C or --stop-after
      save_checkpoint(r);
      std::cout << (ctrl_c ? "\ninterrupted" : "\nstopped") << " at step "
                << r.at.step << " of " << r.lr.total << "; checkpoint in "
                << a.out << " (continue with --resume)\n";
    }
    if (!speed) {
      return ctrl_c ? 130 : 0;
    }
    end_epoch(r, *speed);
  }
  if (!r.test) {
    evaluate(r); // a resumed run that had already finished
  }
  if (r.talk) {
    report(r, resnet::seconds_since(wall_start));
  }
  return 0;
} catch (const UsageError& u) {
  (u.code ? std::cerr : std::cout)
      << (u.code ? "train_classifier: " : "") << u.problem;
  return u.code;
} catch (const std::exception& e) {
  std::cerr << "train_classifier: " << resnet::error_message(e) << "\n";
  return 1;
}
