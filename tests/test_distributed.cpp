// Data-parallel training (include/resnet/train/distributed.h): two
// processes with half a batch each take the same step as one process with the
// whole batch; a peer that dies or never comes makes the other fail within its
// timeout; torchrun's environment is read strictly.
//
// The multi-process tests start this test binary again as the workers
// (DistributedWorker.*, chosen by RESNET_DIST_CASE), on loopback.

#include "test_support.h"

#include <resnet/train/distributed.h>

#include <torch/serialize.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_distributed {

namespace {

namespace dist = resnet::distributed;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

// ---------------------------------------------------------------------------
// The model and the step both sides take.

// Convolution, group norm and a linear layer, a buffer the forward pass
// uses, a parameter only some samples use and one no sample uses.
struct TinyNetImpl : torch::nn::Module {
  explicit TinyNetImpl(int64_t seed) {
    torch::manual_seed(seed);
    conv = register_module("conv", torch::nn::Conv2d(3, 4, 3));
    norm = register_module("norm", torch::nn::GroupNorm(2, 4));
    fc = register_module("fc", torch::nn::Linear(4 * 6 * 6, 5));
    scale = register_buffer("scale", torch::rand({1, 3, 1, 1}) + 0.5);
    extra = register_parameter("extra", torch::randn({5}));
    unused = register_parameter("unused", torch::randn({3}));
  }
  // Adds `extra` to the logits of the rows where `marked` is true.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& marked) {
    auto y = fc(torch::relu(norm(conv(x * scale))).flatten(1));
    if (marked.any().item<bool>()) {
      y = y + marked.unsqueeze(1).to(y.dtype()) * extra;
    }
    return y;
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::Tensor scale, extra, unused;
};
TORCH_MODULE(TinyNet);

// Convolution, batch norm (plain or synchronized) and a linear layer, in
// channels_last like the trainer's networks.
template <class Norm>
struct BatchNormNetImpl : torch::nn::Module {
  explicit BatchNormNetImpl(int64_t seed) {
    torch::manual_seed(seed);
    conv = register_module("conv", torch::nn::Conv2d(3, 4, 3));
    norm = register_module("norm", Norm(4));
    fc = register_module("fc", torch::nn::Linear(4 * 6 * 6, 5));
    // Not the identity, so that the affine gradients matter.
    torch::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
    norm->bias.uniform_(-0.5, 0.5);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto h = conv(x).contiguous(torch::MemoryFormat::ChannelsLast);
    return fc(torch::relu(norm(h)).flatten(1));
  }
  torch::nn::Conv2d conv{nullptr};
  Norm norm{nullptr};
  torch::nn::Linear fc{nullptr};
};
template <class Norm>
using BatchNormNet = std::shared_ptr<BatchNormNetImpl<Norm>>;

constexpr int64_t kBatch = 8;
constexpr int64_t kModelSeed = 7;

struct Batch {
  torch::Tensor x, y, marked;
};

// Rows [begin, end) of the batch every process makes alike; the first half
// is marked.
Batch batch_rows(int64_t begin, int64_t end) {
  torch::manual_seed(123);
  auto x = torch::randn({kBatch, 3, 8, 8});
  auto y = torch::randint(0, 5, {kBatch}, torch::kLong);
  auto marked = torch::arange(kBatch) < kBatch / 2;
  return {
      x.slice(0, begin, end),
      y.slice(0, begin, end),
      marked.slice(0, begin, end)};
}

// The cross-entropy gradients of a batch, added to .grad.
void backward(TinyNet& net, const Batch& b) {
  torch::nn::functional::cross_entropy(net->forward(b.x, b.marked), b.y)
      .backward();
}

// One SGD step; `between` runs after backward, before the step.
template <class F>
void sgd_step(TinyNet& net, const Batch& b, F&& between) {
  torch::optim::SGD sgd(
      net->parameters(),
      torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.01));
  sgd.zero_grad();
  backward(net, b);
  between();
  sgd.step();
}

// Two SGD steps of a BatchNormNet on rows [begin, end) of the batch;
// `between` runs after each backward, before the step.
template <class Norm, class F>
std::vector<torch::Tensor> batch_norm_steps(
    BatchNormNetImpl<Norm>& net,
    int64_t begin,
    int64_t end,
    F&& between) {
  torch::optim::SGD sgd(
      net.parameters(),
      torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.01));
  for (int step = 0; step < 2; ++step) {
    const auto b = batch_rows(begin, end);
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(net.forward(b.x * (step + 1)), b.y)
        .backward();
    between();
    sgd.step();
  }
  return resnet_test::snapshot(net);
}

// The gradients of `net`'s parameters (undefined where there is none).
std::vector<torch::Tensor> gradients(const torch::nn::Module& net) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : net.parameters()) {
    grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  }
  return grads;
}

// Whether two gradient lists are the same numbers, undefined where the
// other is.
bool same_gradients(
    const std::vector<torch::Tensor>& a,
    const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].defined() != b[i].defined() ||
        (a[i].defined() && !torch::equal(a[i], b[i]))) {
      return false;
    }
  }
  return true;
}

// Buckets of a few tensors of TinyNet each.
dist::DataParallelOptions tiny_buckets() {
  return dist::DataParallelOptions().bucket_bytes(256).first_bucket_bytes(64);
}

// The cross-entropy gradients of rows [begin, end), added to .grad.
void backward_rows(TinyNet& net, int64_t begin, int64_t end) {
  backward(net, batch_rows(begin, end));
}

// ---------------------------------------------------------------------------
// Workers: this binary again, one test chosen by RESNET_DIST_CASE.

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

TEST(DistributedWorker, RunsTheCaseInTheEnvironment) {
  const std::string which = env_or("RESNET_DIST_CASE", "");
  if (which.empty()) {
    GTEST_SKIP() << "started by the Distributed tests only";
  }
  const milliseconds timeout(std::stoll(env_or("RESNET_DIST_TIMEOUT_MS", "")));
  const fs::path dir = env_or("RESNET_DIST_DIR", "");
  dist::Group group(dist::from_environment(), timeout);
  if (which == "train") {
    // Each rank starts from other weights: broadcast_module must fix that.
    TinyNet net(kModelSeed + group.rank());
    dist::broadcast_module(*net, group);
    const int64_t half = kBatch / group.size();
    const auto b = batch_rows(group.rank() * half, (group.rank() + 1) * half);
    // A tiny bucket size makes several buckets.
    sgd_step(net, b, [&] { dist::average_gradients(*net, group, 256); });
    torch::save(
        resnet_test::snapshot(*net),
        (dir / ("rank" + std::to_string(group.rank()) + ".pt")).string());
    group.barrier();
  } else if (which == "overlap") {
    // Two steps with the gradients averaged while backward runs, in
    // buckets of a few tensors; a second network averages after backward
    // and must get the same gradients, bit for bit.
    TinyNet net(kModelSeed + group.rank());
    dist::DataParallel parallel(*net, group, tiny_buckets());
    TinyNet after(kModelSeed);
    // The same, all buckets sent in finish().
    TinyNet late(kModelSeed);
    dist::DataParallel late_parallel(
        *late, group, tiny_buckets().overlap(false));
    const int64_t half = kBatch / group.size();
    const auto b = batch_rows(group.rank() * half, (group.rank() + 1) * half);
    for (int step = 0; step < 2; ++step) {
      sgd_step(net, b, [&] { parallel.finish(); });
      sgd_step(after, b, [&] { dist::average_gradients(*after, group); });
      sgd_step(late, b, [&] { late_parallel.finish(); });
      EXPECT_TRUE(same_gradients(gradients(*net), gradients(*after)))
          << "step " << step;
      EXPECT_TRUE(same_gradients(gradients(*late), gradients(*after)))
          << "step " << step;
    }
    EXPECT_EQ(late_parallel.overlapped(), 0u);
    // Rank 1 has no marked rows, so no gradient of `extra`, but gets the
    // average; `unused` has none anywhere and keeps none.
    EXPECT_TRUE(net->extra.grad().defined());
    EXPECT_FALSE(net->unused.grad().defined());
    // The buckets were rebuilt after the first pass in the order rank 0's
    // gradients came, `unused` last: there, all but the last went out
    // during backward (rank 1's wait for `extra`, which it has none of).
    EXPECT_GE(parallel.buckets(), 3u);
    if (group.rank() == 0) {
      EXPECT_EQ(parallel.overlapped(), parallel.buckets() - 1);
    }
    torch::save(
        resnet_test::snapshot(*net),
        (dir / ("rank" + std::to_string(group.rank()) + ".pt")).string());
    group.barrier();
  } else if (which == "accumulate") {
    // Two passes per process, the first only accumulating: the average of
    // the sums, as average_gradients gives it after both.
    TinyNet net(kModelSeed);
    dist::DataParallel parallel(*net, group, tiny_buckets());
    TinyNet after(kModelSeed);
    const int64_t quarter = kBatch / 4;
    const int64_t first = group.rank() * 2 * quarter;
    parallel.set_synchronizing(false);
    backward_rows(net, first, first + quarter);
    EXPECT_EQ(net->conv->weight.grad().defined(), true);
    parallel.set_synchronizing(true);
    backward_rows(net, first + quarter, first + 2 * quarter);
    parallel.finish();
    backward_rows(after, first, first + quarter);
    backward_rows(after, first + quarter, first + 2 * quarter);
    dist::average_gradients(*after, group);
    EXPECT_TRUE(same_gradients(gradients(*net), gradients(*after)));
    // Averaged, not this process's own sum.
    TinyNet alone(kModelSeed);
    backward_rows(alone, first, first + quarter);
    backward_rows(alone, first + quarter, first + 2 * quarter);
    EXPECT_FALSE(
        torch::allclose(alone->conv->weight.grad(), net->conv->weight.grad()));
    // A second synchronizing pass before finish() is refused.
    backward_rows(net, first, first + quarter);
    const auto message =
        resnet_test::error_of([&] { backward_rows(net, first, first + 1); });
    EXPECT_TRUE(
        resnet_test::contains(message, "DataParallel: a second gradient for '"))
        << message;
    EXPECT_TRUE(resnet_test::contains(message, "call finish()")) << message;
    // The first pass is still whole: finish() completes it everywhere.
    parallel.finish();
    group.barrier();
  } else if (which == "nccl") {
    // CUDA tensors through NCCL, each rank on its own GPU.
    at::globalContext().setAllowTF32CuDNN(false);
    const torch::Device gpu(
        torch::kCUDA, static_cast<c10::DeviceIndex>(group.rank()));
    auto t = torch::full({5}, group.rank() + 1.0, gpu);
    group.all_reduce_sum_({t});
    EXPECT_TRUE(torch::equal(t.cpu(), torch::full({5}, 3.0)));
    TinyNet net(kModelSeed + group.rank());
    net->to(gpu);
    dist::DataParallel parallel(*net, group, tiny_buckets());
    const int64_t half = kBatch / group.size();
    auto b = batch_rows(group.rank() * half, (group.rank() + 1) * half);
    b = {b.x.to(gpu), b.y.to(gpu), b.marked.to(gpu)};
    sgd_step(net, b, [&] { parallel.finish(); });
    sgd_step(net, b, [&] { parallel.finish(); });
    net->to(torch::kCPU);
    torch::save(
        resnet_test::snapshot(*net),
        (dir / ("rank" + std::to_string(group.rank()) + ".pt")).string());
    group.barrier();
  } else if (which == "sync_bn") {
    // Gradients averaged during backward, beside batch norm's collectives.
    BatchNormNetImpl<dist::SyncBatchNorm2d> net(kModelSeed);
    EXPECT_EQ(dist::synchronize_batch_norm(net, group), 1);
    dist::DataParallel parallel(
        net, group, tiny_buckets().first_bucket_bytes(64).bucket_bytes(64));
    const int64_t half = kBatch / group.size();
    const auto state = batch_norm_steps(
        net, group.rank() * half, (group.rank() + 1) * half, [&] {
          parallel.finish();
        });
    EXPECT_GT(parallel.overlapped(), 0u);
    torch::save(
        state,
        (dir / ("rank" + std::to_string(group.rank()) + ".pt")).string());
    group.barrier();
  } else if (which == "exit_after_join") {
    group.barrier();
    if (group.rank() == 1) {
      std::_Exit(0);
    }
    auto t = torch::ones({1000});
    for (int i = 0; i < 100; ++i) {
      group.all_reduce_sum_({t});
      std::this_thread::sleep_for(milliseconds(100));
    }
    FAIL() << "rank 0 kept reducing after rank 1 exited";
  } else if (which == "other_model") {
    // Rank 1's network has a parameter more than rank 0's.
    TinyNet net(kModelSeed);
    if (group.rank() == 1) {
      net->register_parameter("more", torch::zeros({2}));
    }
    dist::broadcast_module(*net, group);
    FAIL() << "broadcast_module accepted different modules";
  } else if (which == "agree") {
    const auto sum = group.sum({group.rank() + 1.0, 10.0});
    EXPECT_EQ(sum, (std::vector<double>{3.0, 20.0}));
    // A channel's collectives pair among themselves, whichever order the
    // processes interleave them with the group's.
    auto side = group.channel("side");
    auto t = torch::full({3}, group.rank() + 1.0);
    std::function<void()> wait;
    std::vector<double> main_sum;
    if (group.rank() == 0) {
      wait = side.start_all_reduce_sum_(t);
      main_sum = group.sum({1.0});
    } else {
      main_sum = group.sum({1.0});
      wait = side.start_all_reduce_sum_(t);
    }
    wait();
    EXPECT_TRUE(torch::equal(t, torch::full({3}, 3.0)));
    EXPECT_EQ(main_sum, (std::vector<double>{2.0}));
    group.expect_same(7, "number");
    const auto message =
        resnet_test::error_of([&] { group.expect_same(group.rank(), "rank"); });
    EXPECT_TRUE(resnet_test::contains(
        message, "1 of 2 processes have another rank than rank 0's 0 (rank "))
        << message;
  } else if (which == "join_only") {
    FAIL() << "joined although a rank is missing";
  } else {
    FAIL() << "unknown RESNET_DIST_CASE " << which;
  }
}

// ---------------------------------------------------------------------------
// The parent side.

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A fresh folder, removed with the object.
struct TempDir {
  TempDir() {
    std::string pattern =
        (fs::temp_directory_path() / "resnet_dist_XXXXXX").string();
    EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
    path = pattern;
  }
  ~TempDir() {
    try {
      resnet_test::remove_tree(path);
    } catch (const std::exception&) {
    }
  }
  fs::path path;
};

// A worker process; killed if still running when the object goes.
using Worker = resnet_test::ChildProcess;

// Starts rank `rank` of `world` running `which`, its output in `dir`.
void start_worker(
    Worker& w,
    const std::string& which,
    int rank,
    int world,
    int port,
    milliseconds timeout,
    const fs::path& dir,
    const std::map<std::string, std::string>& extra = {}) {
  std::map<std::string, std::string> set = {
      {"RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(world)},
      {"LOCAL_RANK", std::to_string(rank)},
      {"MASTER_ADDR", "127.0.0.1"},
      {"MASTER_PORT", std::to_string(port)},
      {"RESNET_DIST_CASE", which},
      {"RESNET_DIST_TIMEOUT_MS", std::to_string(timeout.count())},
      {"RESNET_DIST_DIR", dir.string()}};
  set.insert(extra.begin(), extra.end());
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    // GoogleTest's own (report file, sharding) are the parent's.
    if (set.count(name) == 0 && name.rfind("GTEST_", 0) != 0) {
      env.push_back(entry);
    }
  }
  for (const auto& [name, value] : set) {
    env.push_back(name + "=" + value);
  }
  const std::string error = w.start(
      {"/proc/self/exe", "--gtest_filter=DistributedWorker.*"},
      dir / (which + "_rank" + std::to_string(rank) + ".log"),
      env);
  ASSERT_EQ(error, "");
}

// Starts ranks 0 and 1 of two on one free port.
void start_pair(
    Worker& w0,
    Worker& w1,
    const std::string& which,
    milliseconds timeout,
    const fs::path& dir,
    int port = 0,
    const std::map<std::string, std::string>& extra = {}) {
  port = port ? port : free_port();
  ASSERT_NO_FATAL_FAILURE(
      start_worker(w0, which, 0, 2, port, timeout, dir, extra));
  ASSERT_NO_FATAL_FAILURE(
      start_worker(w1, which, 1, 2, port, timeout, dir, extra));
}

#define SKIP_WITHOUT_C10D()                                                 \
  if (!dist::available()) {                                                 \
    GTEST_SKIP() << "this build has no c10d Gloo (RESNET_WITH_C10D unset)"; \
  }

// Runs ranks 0 and 1 of `which` (collectives time out after `limit`) and
// expects both to succeed.
void run_pair(
    const std::string& which,
    seconds limit,
    const fs::path& dir,
    int port = 0,
    const std::map<std::string, std::string>& extra = {}) {
  Worker w0, w1;
  ASSERT_NO_FATAL_FAILURE(start_pair(w0, w1, which, limit, dir, port, extra));
  ASSERT_TRUE(w0.wait(limit * 2)) << "rank 0 hung:\n" << w0.output();
  ASSERT_TRUE(w1.wait(limit * 2)) << "rank 1 hung:\n" << w1.output();
  ASSERT_TRUE(w0.exited_ok()) << w0.output();
  ASSERT_TRUE(w1.exited_ok()) << w1.output();
}

// The names of a module's parameters and buffers, in snapshot()'s order.
std::vector<std::string> names_of(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& item : resnet::state_dict(module)) {
    names.push_back(item.first);
  }
  return names;
}

// The tensors each rank saved (DIR/rank<N>.pt) equal `expected`, to 1e-5.
void expect_ranks_saved(
    const fs::path& dir,
    const std::vector<torch::Tensor>& expected,
    const std::vector<std::string>& names) {
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<torch::Tensor> got;
    torch::load(got, (dir / ("rank" + std::to_string(rank) + ".pt")).string());
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const auto a = got[i].to(torch::kDouble);
      const auto b = expected[i].to(torch::kDouble);
      EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6))
          << "rank " << rank << ", " << names[i] << ": largest difference "
          << (a - b).abs().max().item<double>();
    }
  }
}

// Each rank saved what two SGD steps on the whole batch make in one process.
void expect_two_steps_of_the_whole_batch(const fs::path& dir) {
  TinyNet reference(kModelSeed);
  const auto b = batch_rows(0, kBatch);
  sgd_step(reference, b, [] {});
  sgd_step(reference, b, [] {});
  expect_ranks_saved(
      dir, resnet_test::snapshot(*reference), names_of(*reference));
}

TEST(Distributed, TwoHalfBatchesTakeTheStepOfTheWholeBatch) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(run_pair("train", seconds(60), dir.path));

  TinyNet reference(kModelSeed);
  const auto before = resnet_test::snapshot(*reference);
  sgd_step(reference, batch_rows(0, kBatch), [] {});
  const auto expected = resnet_test::snapshot(*reference);
  const auto names = names_of(*reference);
  expect_ranks_saved(dir.path, expected, names);
  // The step moved the weights, and the one parameter no sample uses did
  // not move: it has no gradient anywhere, so SGD's weight decay skips it.
  EXPECT_FALSE(torch::allclose(before[0], expected[0]));
  const auto unused = std::find(names.begin(), names.end(), "unused");
  ASSERT_NE(unused, names.end());
  EXPECT_TRUE(torch::equal(
      before[unused - names.begin()], expected[unused - names.begin()]));
}

TEST(Distributed, GradientsAveragedDuringBackwardTakeTheWholeBatchsSteps) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(run_pair("overlap", seconds(60), dir.path));
  expect_two_steps_of_the_whole_batch(dir.path);
}

TEST(Distributed, NcclCarriesCudaTensors) {
  SKIP_WITHOUT_C10D();
  if (!dist::nccl_available()) {
    GTEST_SKIP() << "this build has no NCCL (RESNET_WITH_NCCL unset)";
  }
  if (torch::cuda::device_count() < 2) {
    GTEST_SKIP() << "NCCL needs a GPU per process; "
                 << torch::cuda::device_count() << " visible";
  }
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(run_pair("nccl", seconds(120), dir.path));
  expect_two_steps_of_the_whole_batch(dir.path);
}

TEST(Distributed, DataParallelAccumulatesAndRefusesASecondPass) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(run_pair("accumulate", seconds(60), dir.path));
}

TEST(Distributed, APeerThatExitsMakesTheOtherFailWithinTheTimeout) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  Worker w0, w1;
  ASSERT_NO_FATAL_FAILURE(
      start_pair(w0, w1, "exit_after_join", seconds(5), dir.path));
  ASSERT_TRUE(w1.wait(seconds(60))) << w1.output();
  ASSERT_TRUE(w0.wait(seconds(30)))
      << "rank 0 still running 30 s after its peer exited:\n"
      << w0.output();
  EXPECT_FALSE(w0.exited_ok()) << w0.output();
  EXPECT_TRUE(resnet_test::contains(
      w0.output(), "resnet: all_reduce failed on rank 0 of 2"))
      << w0.output();
}

TEST(Distributed, BroadcastModuleRejectsAModuleUnlikeRankZeros) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  Worker w0, w1;
  ASSERT_NO_FATAL_FAILURE(
      start_pair(w0, w1, "other_model", seconds(5), dir.path));
  ASSERT_TRUE(w1.wait(seconds(60))) << w1.output();
  ASSERT_TRUE(w0.wait(seconds(30))) << w0.output();
  EXPECT_FALSE(w1.exited_ok()) << w1.output();
  EXPECT_FALSE(w0.exited_ok()) << w0.output();
  EXPECT_TRUE(resnet_test::contains(
      w1.output(),
      "resnet: broadcast_module: rank 1's module has 10 "
      "tensors with 858 elements, rank 0's has 9 with 856"))
      << w1.output();
}

TEST(Distributed, AMissingRankMakesStartUpFailWithinBoundedTime) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  Worker w0;
  ASSERT_NO_FATAL_FAILURE(
      start_worker(w0, "join_only", 0, 2, free_port(), seconds(5), dir.path));
  ASSERT_TRUE(w0.wait(seconds(40)))
      << "rank 0 of 2 still waiting 40 s after start with a 5 s timeout:\n"
      << w0.output();
  EXPECT_FALSE(w0.exited_ok()) << w0.output();
  EXPECT_TRUE(resnet_test::contains(
      w0.output(), "resnet: rank 0 could not join 2 processes"))
      << w0.output();
}

// ---------------------------------------------------------------------------
// In this process.

// Sets environment variables for one test, restoring them afterwards.
class ScopedEnvironment {
 public:
  explicit ScopedEnvironment(std::map<std::string, const char*> values) {
    for (const char* name :
         {"RANK",
          "WORLD_SIZE",
          "LOCAL_RANK",
          "MASTER_ADDR",
          "MASTER_PORT",
          "TORCHELASTIC_USE_AGENT_STORE"}) {
      const char* old = std::getenv(name);
      saved_.emplace_back(
          name, old ? std::optional<std::string>(old) : std::nullopt);
      ::unsetenv(name);
    }
    for (const auto& [name, value] : values) {
      ::setenv(name.c_str(), value, 1);
    }
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::string environment_error(std::map<std::string, const char*> values) {
  ScopedEnvironment scoped(std::move(values));
  try {
    dist::from_environment();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(DistributedEnvironment, ReadsTorchrunsVariables) {
  {
    ScopedEnvironment none({});
    const auto env = dist::from_environment();
    EXPECT_EQ(env.rank, 0);
    EXPECT_EQ(env.world_size, 1);
    EXPECT_EQ(env.local_rank, 0);
    EXPECT_FALSE(env.agent_store);
  }
  ScopedEnvironment all(
      {{"RANK", "3"},
       {"WORLD_SIZE", "4"},
       {"LOCAL_RANK", "1"},
       {"MASTER_ADDR", "node0"},
       {"MASTER_PORT", "1234"},
       {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
  const auto env = dist::from_environment();
  EXPECT_TRUE(env.agent_store);
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, "node0");
  EXPECT_EQ(env.master_port, 1234);
}

TEST(DistributedEnvironment, MalformedValuesNameTheVariable) {
  EXPECT_EQ(
      environment_error({{"RANK", "x"}, {"WORLD_SIZE", "2"}}),
      "resnet: RANK must be an integer in [0, WORLD_SIZE) = [0, 2), got 'x'");
  EXPECT_EQ(
      environment_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}),
      "resnet: RANK must be an integer in [0, WORLD_SIZE) = [0, 2), got '2'");
  EXPECT_EQ(
      environment_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}),
      "resnet: WORLD_SIZE must be an integer >= 1, got '0'");
  EXPECT_EQ(
      environment_error({{"RANK", "0"}, {"WORLD_SIZE", "2x"}}),
      "resnet: WORLD_SIZE must be an integer >= 1, got '2x'");
  EXPECT_EQ(
      environment_error({{"RANK", "0"}}),
      "resnet: RANK is set but WORLD_SIZE is not; set both (torchrun does) "
      "or neither for one process");
  EXPECT_EQ(
      environment_error(
          {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "-1"}}),
      "resnet: LOCAL_RANK must be an integer in [0, WORLD_SIZE) = [0, 2), "
      "got '-1'");
  EXPECT_EQ(
      environment_error(
          {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}),
      "resnet: MASTER_PORT must be a port number in [1, 65535], got '70000'");
  EXPECT_EQ(
      environment_error(
          {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "http"}}),
      "resnet: MASTER_PORT must be a port number in [1, 65535], got 'http'");
  EXPECT_EQ(
      environment_error(
          {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", ""}}),
      "resnet: MASTER_ADDR must name rank 0's host, got ''");
}

TEST(Distributed, SynchronizedBatchNormTakesTheWholeBatchsSteps) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(run_pair("sync_bn", seconds(60), dir.path));

  // One process, the whole batch, torch's own batch norm.
  BatchNormNetImpl<torch::nn::BatchNorm2d> reference(kModelSeed);
  const auto expected = batch_norm_steps(reference, 0, kBatch, [] {});
  expect_ranks_saved(dir.path, expected, names_of(reference));
  // Half a batch alone normalizes differently: the comparison can fail.
  BatchNormNetImpl<torch::nn::BatchNorm2d> half(kModelSeed);
  const auto alone = batch_norm_steps(half, 0, kBatch / 2, [] {});
  EXPECT_FALSE(torch::allclose(alone[0], expected[0], 1e-3, 1e-4));
}

TEST(Distributed, SyncBatchNormAloneIsBatchNorm) {
  // No group, one process, or eval mode: torch's batch norm exactly.
  BatchNormNetImpl<dist::SyncBatchNorm2d> sync(kModelSeed);
  BatchNormNetImpl<torch::nn::BatchNorm2d> plain(kModelSeed);
  const auto x = batch_rows(0, kBatch).x;
  EXPECT_TRUE(torch::equal(sync.forward(x), plain.forward(x)));
  dist::Group one(dist::Environment{}, milliseconds(100));
  EXPECT_EQ(dist::synchronize_batch_norm(sync, one), 1);
  EXPECT_EQ(sync.norm->group(), &one);
  EXPECT_TRUE(torch::equal(sync.forward(x), plain.forward(x)));
  sync.eval();
  plain.eval();
  EXPECT_TRUE(torch::equal(sync.forward(x), plain.forward(x)));
  EXPECT_TRUE(torch::equal(sync.norm->running_mean, plain.norm->running_mean));
  // The same names, so weights load either way.
  EXPECT_EQ(names_of(sync), names_of(plain));
  auto net = resnet::create<dist::SyncBatchNorm2d>(
      "resnet20", resnet::ResNetOptions().num_classes(3));
  EXPECT_GT(dist::synchronize_batch_norm(*net, one), 10);
  EXPECT_EQ(
      net->forward(torch::randn({2, 3, 16, 16})).sizes(),
      (std::vector<int64_t>{2, 3}));
}

TEST(Distributed, SumsAndAgreementsSpanTheProcesses) {
  SKIP_WITHOUT_C10D();
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(run_pair("agree", seconds(30), dir.path));
}

#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
TEST(Distributed, JoinsThroughALaunchersStore) {
  // As torchrun 2.x's agent does: the launcher serves the store and says so
  // with TORCHELASTIC_USE_AGENT_STORE=True; rank 0 then only connects.
  TempDir dir;
  const int port = free_port();
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(port);
  options.isServer = true;
  options.waitWorkers = false;
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
  store->set("launcher/key", {1, 2, 3});
  ASSERT_NO_FATAL_FAILURE(run_pair(
      "agree",
      seconds(30),
      dir.path,
      port,
      {{"TORCHELASTIC_USE_AGENT_STORE", "True"}}));
  // The workers used keys of their own.
  EXPECT_EQ(store->get("launcher/key"), (std::vector<uint8_t>{1, 2, 3}));
}
#endif

#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D && TORCH_VERSION_MAJOR < 2
TEST(Distributed, ALaunchersStoreInAnotherProtocolFailsWithinSeconds) {
  // torchrun 2.x's store, to a program built against LibTorch 1.x, takes
  // the connections and the requests and answers none of them: here a
  // socket that does the same. The join must fail after the probe, not
  // after the whole timeout, and say what to do.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::vector<std::thread> readers;
  std::thread server([&] {
    while (true) {
      const int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) {
        return;
      }
      readers.emplace_back([c] {
        char buf[4096];
        while (::recv(c, buf, sizeof(buf), 0) > 0) {
        }
        ::close(c);
      });
    }
  });
  dist::Environment env;
  env.world_size = 2;
  env.master_port = ntohs(addr.sin_port);
  env.agent_store = true;
  const auto start = std::chrono::steady_clock::now();
  const auto message = resnet_test::error_of(
      [&] { dist::Group group(env, std::chrono::minutes(5)); });
  const auto took = std::chrono::steady_clock::now() - start;
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  server.join();
  for (auto& r : readers) {
    r.join();
  }
  EXPECT_TRUE(resnet_test::contains(message, "got no answer within 10000 ms"))
      << message;
  EXPECT_TRUE(resnet_test::contains(message, "examples/launch.sh")) << message;
  EXPECT_LT(took, seconds(60));
}
#endif

TEST(Distributed, ProcessDeviceGivesEachLocalRankItsGpu) {
  dist::Environment env;
  EXPECT_EQ(dist::process_device(torch::kCPU, env), torch::Device(torch::kCPU));
  EXPECT_EQ(
      dist::process_device(torch::Device("cuda:1"), env),
      torch::Device("cuda:1"));
  env.world_size = 4;
  env.rank = env.local_rank = 3;
  EXPECT_EQ(
      dist::process_device(torch::Device("cuda:0"), env),
      torch::Device("cuda:0"));
  EXPECT_EQ(dist::process_device(torch::kCPU, env), torch::Device(torch::kCPU));
  const auto gpus = static_cast<int64_t>(torch::cuda::device_count());
  if (gpus == 0) {
    const auto message = resnet_test::error_of(
        [&] { dist::process_device(torch::Device("cuda"), env); });
    EXPECT_TRUE(resnet_test::contains(message, "there is no GPU")) << message;
  } else {
    EXPECT_EQ(
        dist::process_device(torch::Device("cuda"), env),
        torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(3 % gpus)));
  }
}

TEST(Distributed, OneProcessNeedsNoPeersAndChangesNothing) {
  dist::Group group(dist::Environment{}, milliseconds(100));
  EXPECT_EQ(group.size(), 1);
  TinyNet net(kModelSeed);
  const auto before = resnet_test::snapshot(*net);
  dist::broadcast_module(*net, group);
  auto t = torch::arange(4.0);
  group.all_reduce_mean_({t});
  group.all_reduce_sum_({t});
  group.barrier();
  group.expect_same(5, "number");
  EXPECT_EQ(group.sum({1.5, 2.0}), (std::vector<double>{1.5, 2.0}));
  EXPECT_TRUE(torch::equal(t, torch::arange(4.0)));
  EXPECT_TRUE(resnet_test::unchanged(*net, before));
  // DataParallel leaves gradients as backward made them.
  dist::DataParallel parallel(*net, group);
  backward_rows(net, 0, kBatch);
  const auto grads = gradients(*net);
  parallel.finish();
  EXPECT_TRUE(same_gradients(gradients(*net), grads));
  EXPECT_EQ(parallel.buckets(), 0u);
}

TEST(Distributed, WithoutC10dMoreThanOneProcessIsAClearError) {
  if (dist::available()) {
    GTEST_SKIP() << "this build has c10d Gloo";
  }
  dist::Environment env;
  env.world_size = 2;
  const auto message = resnet_test::error_of([&] { dist::Group g(env); });
  EXPECT_TRUE(resnet_test::contains(message, "needs c10d with Gloo"))
      << message;
}

} // namespace

} // namespace test_distributed
