#pragma once

// Data-parallel training over LibTorch's own c10d with the Gloo backend:
// every process holds a copy of the model and a share of the batch; the
// processes start from rank 0's weights (broadcast_module) and average their
// gradients after each backward pass (average_gradients), so that one
// optimizer step in each equals a step on the whole batch.
//
// The processes meet as torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT (from_environment); rank 0 serves a TCPStore at
// MASTER_ADDR:MASTER_PORT through which the others find it.
//
// c10d's Gloo headers need Gloo's own headers (Debian: libgloo-dev), which
// not every LibTorch build comes with (PyPI's wheels have none). Define
// RESNET_WITH_C10D=1 where <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
// compiles (with USE_DISTRIBUTED and USE_C10D_GLOO, which LibTorch's CMake
// target defines); without it available() is false and a Group of more than
// one process cannot be made, while a single process (no RANK/WORLD_SIZE)
// still works, every collective then being a no-op. Not part of
// <resnet/resnet.h>.

#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
#if !defined(USE_C10D_GLOO)
// LibTorch's CMake target defines both.
#error "RESNET_WITH_C10D needs USE_C10D_GLOO and USE_DISTRIBUTED defined"
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace resnet::distributed {

/// Whether this build can run more than one process (c10d with Gloo).
constexpr bool available() {
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
  return true;
#else
  return false;
#endif
}

/// How long a process waits for the others, at start-up and in every
/// collective, before it gives up with an exception: long enough for rank 0
/// to evaluate or save a checkpoint while the others wait, short enough that
/// a dead peer does not hang the rest for good.
inline constexpr std::chrono::milliseconds default_timeout{
    std::chrono::minutes(5)};

/// Bytes of gradients reduced by one collective (PyTorch DDP's default).
inline constexpr int64_t default_bucket_bytes = 25 * 1024 * 1024;

/// Where this process stands among the others, as torchrun describes it.
struct Environment {
  /// This process's index, in [0, world_size).
  int64_t rank = 0;
  /// How many processes train together.
  int64_t world_size = 1;
  /// This process's index among those on its machine (to pick a GPU).
  int64_t local_rank = 0;
  /// The host of rank 0, which serves the rendezvous store.
  std::string master_addr = "127.0.0.1";
  /// The port of the rendezvous store on master_addr.
  int master_port = 29500;
};

namespace detail {

// The value of `name` as an integer in [lo, hi], or std::invalid_argument
// naming the variable, what it must be and what it was.
inline int64_t environment_integer(
    const char* name,
    const char* text,
    int64_t lo,
    int64_t hi,
    const std::string& expected) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno == ERANGE || value < lo ||
      value > hi) {
    throw std::invalid_argument(
        std::string("resnet: ") + name + " must be " + expected + ", got '" +
        text + "'");
  }
  return static_cast<int64_t>(value);
}

} // namespace detail

/// Reads torchrun's RANK, WORLD_SIZE, LOCAL_RANK (default: RANK),
/// MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default 29500). Without
/// RANK and WORLD_SIZE this is the only process: rank 0 of 1. Throws
/// std::invalid_argument naming the variable for a malformed value.
inline Environment from_environment() {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  Environment env;
  if (rank == nullptr && world == nullptr) {
    return env;
  }
  if (rank == nullptr || world == nullptr) {
    throw std::invalid_argument(
        std::string("resnet: ") + (rank ? "RANK" : "WORLD_SIZE") +
        " is set but " + (rank ? "WORLD_SIZE" : "RANK") +
        " is not; set both (torchrun does) or neither for one process");
  }
  env.world_size = detail::environment_integer(
      "WORLD_SIZE", world, 1, 1 << 20, "an integer >= 1");
  const std::string ranks = "an integer in [0, WORLD_SIZE) = [0, " +
      std::to_string(env.world_size) + ")";
  env.rank =
      detail::environment_integer("RANK", rank, 0, env.world_size - 1, ranks);
  const char* local = std::getenv("LOCAL_RANK");
  env.local_rank = local == nullptr
      ? env.rank
      : detail::environment_integer(
            "LOCAL_RANK", local, 0, env.world_size - 1, ranks);
  if (const char* addr = std::getenv("MASTER_ADDR")) {
    if (*addr == '\0') {
      throw std::invalid_argument(
          "resnet: MASTER_ADDR must name rank 0's host, got ''");
    }
    env.master_addr = addr;
  }
  if (const char* port = std::getenv("MASTER_PORT")) {
    env.master_port = static_cast<int>(detail::environment_integer(
        "MASTER_PORT", port, 1, 65535, "a port number in [1, 65535]"));
  }
  return env;
}

namespace detail {

// Tensors of one dtype and device that travel as one flat tensor.
struct Bucket {
  std::vector<size_t> members;
  int64_t bytes = 0;
};

// Groups tensors by dtype and device, in order, into buckets of at most
// `bucket_bytes` (a larger tensor is a bucket alone). The same list gives
// the same buckets in every process.
inline std::vector<Bucket> make_buckets(
    const std::vector<torch::Tensor>& tensors,
    int64_t bucket_bytes) {
  std::vector<Bucket> done, open;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    size_t k = 0;
    for (; k < open.size(); ++k) {
      const auto& first = tensors[open[k].members.front()];
      if (first.scalar_type() == t.scalar_type() &&
          first.device() == t.device()) {
        break;
      }
    }
    if (k < open.size() && open[k].bytes + bytes > bucket_bytes) {
      done.push_back(std::move(open[k]));
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(k));
      k = open.size();
    }
    if (k == open.size()) {
      open.emplace_back();
    }
    open[k].members.push_back(i);
    open[k].bytes += bytes;
  }
  for (auto& b : open) {
    done.push_back(std::move(b));
  }
  return done;
}

// The members of a bucket as one contiguous tensor on the CPU, where Gloo
// reduces them.
inline torch::Tensor flatten(
    const std::vector<torch::Tensor>& tensors,
    const Bucket& bucket) {
  std::vector<torch::Tensor> flat;
  flat.reserve(bucket.members.size());
  for (auto i : bucket.members) {
    flat.push_back(tensors[i].reshape({-1}));
  }
  return torch::cat(flat).to(torch::kCPU);
}

// Copies a flat tensor made by flatten back into the bucket's members.
inline void unflatten(
    const torch::Tensor& flat,
    const std::vector<torch::Tensor>& tensors,
    const Bucket& bucket) {
  int64_t offset = 0;
  for (auto i : bucket.members) {
    auto& t = tensors[i];
    t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

inline void check_tensors(torch::TensorList tensors, const char* who) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(
        tensors[i].defined() && tensors[i].layout() == torch::kStrided,
        "resnet: ",
        who,
        " expects defined dense tensors, got ",
        tensors[i].defined() ? "a sparse tensor" : "an undefined tensor",
        " at position ",
        i);
  }
}

} // namespace detail

/// The processes that train together, joined through c10d's TCPStore and
/// Gloo. Every process must make the same calls in the same order with
/// tensors of the same shapes; a peer that dies or falls behind by more
/// than the timeout makes the others' calls throw.
class Group {
 public:
  /// Joins the others: rank 0 serves the store at master_addr:master_port
  /// and waits for world_size processes. Throws if they are not all there
  /// within `timeout`, which also bounds every later collective.
  explicit Group(
      Environment env,
      std::chrono::milliseconds timeout = default_timeout)
      : env_(std::move(env)), timeout_(timeout) {
    TORCH_CHECK(
        env_.world_size >= 1 && env_.rank >= 0 && env_.rank < env_.world_size,
        "resnet: expected 0 <= rank < world_size, got rank ",
        env_.rank,
        " of ",
        env_.world_size);
    TORCH_CHECK(
        timeout_.count() > 0,
        "resnet: expected a positive timeout, got ",
        timeout_.count(),
        " ms");
    if (env_.world_size == 1) {
      return;
    }
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
    try {
      c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<std::uint16_t>(env_.master_port);
      store_options.isServer = env_.rank == 0;
      store_options.numWorkers = static_cast<std::size_t>(env_.world_size);
      store_options.waitWorkers = true;
      store_options.timeout = timeout_;
      auto store =
          c10::make_intrusive<c10d::TCPStore>(env_.master_addr, store_options);
      auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
      options->devices.push_back(device_for(env_.master_addr));
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
          store,
          static_cast<int>(env_.rank),
          static_cast<int>(env_.world_size),
          options);
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false,
          "resnet: rank ",
          env_.rank,
          " could not join ",
          env_.world_size,
          " processes at ",
          env_.master_addr,
          ":",
          env_.master_port,
          " within ",
          timeout_.count(),
          " ms: ",
          what_of(e));
    }
#else
    TORCH_CHECK(
        false,
        "resnet: data-parallel training over ",
        env_.world_size,
        " processes needs c10d with Gloo, which this build does not have "
        "(resnet::distributed::available() is false; define "
        "RESNET_WITH_C10D=1 with LibTorch's Gloo headers, e.g. Debian's "
        "libtorch-dev with libgloo-dev)");
#endif
  }

  int64_t rank() const {
    return env_.rank;
  }
  int64_t size() const {
    return env_.world_size;
  }
  const Environment& environment() const {
    return env_;
  }
  std::chrono::milliseconds timeout() const {
    return timeout_;
  }

  /// Overwrites `tensors` in every process with those of `root`.
  void broadcast_(
      torch::TensorList tensors,
      int64_t root = 0,
      int64_t bucket_bytes = default_bucket_bytes) {
    detail::check_tensors(tensors, "broadcast_");
    TORCH_CHECK(
        root >= 0 && root < size(),
        "resnet: broadcast_ expects a root in [0, ",
        size(),
        "), got ",
        root);
    collective(tensors, bucket_bytes, false, root);
  }

  /// Replaces each tensor by its sum over the processes.
  void all_reduce_sum_(
      torch::TensorList tensors,
      int64_t bucket_bytes = default_bucket_bytes) {
    detail::check_tensors(tensors, "all_reduce_sum_");
    collective(tensors, bucket_bytes, true, -1);
  }

  /// Replaces each (floating-point) tensor by its mean over the processes.
  void all_reduce_mean_(
      torch::TensorList tensors,
      int64_t bucket_bytes = default_bucket_bytes) {
    detail::check_tensors(tensors, "all_reduce_mean_");
    for (const auto& t : tensors) {
      TORCH_CHECK(
          t.is_floating_point() || t.is_complex(),
          "resnet: all_reduce_mean_ expects floating-point tensors, got ",
          t.scalar_type());
    }
    collective(tensors, bucket_bytes, true, -1);
    if (size() > 1) {
      torch::NoGradGuard no_grad;
      for (const auto& t : tensors) {
        t.div_(size());
      }
    }
  }

  /// Returns when every process has called barrier().
  void barrier() {
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
    if (size() > 1) {
      wait(group_->barrier(), "barrier");
    }
#endif
  }

 private:
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
  static std::string what_of(const std::exception& e) {
    if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
      return c10->what_without_backtrace();
    }
    return e.what();
  }

  // The network device Gloo binds: loopback when rank 0 is on this machine
  // by that name, otherwise this host's own address (or the interface in
  // GLOO_SOCKET_IFNAME), as torch.distributed chooses.
  static std::shared_ptr<::gloo::transport::Device> device_for(
      const std::string& master_addr) {
    if (const char* name = std::getenv("GLOO_SOCKET_IFNAME")) {
      return c10d::ProcessGroupGloo::createDeviceForInterface(name);
    }
    if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0 ||
        master_addr == "::1") {
      return c10d::ProcessGroupGloo::createDeviceForHostname(master_addr);
    }
    return c10d::ProcessGroupGloo::createDefaultDevice();
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false,
          "resnet: ",
          what,
          " failed on rank ",
          rank(),
          " of ",
          size(),
          " (a peer died, or did not call it within ",
          timeout_.count(),
          " ms): ",
          what_of(e));
    }
  }
#endif

  // All buckets go out before the first is waited for. A sum when `reduce`,
  // else a broadcast from `root`.
  void collective(
      torch::TensorList tensors,
      int64_t bucket_bytes,
      bool reduce,
      int64_t root) {
    TORCH_CHECK(
        bucket_bytes > 0,
        "resnet: expected a positive bucket size, got ",
        bucket_bytes);
    if (size() == 1 || tensors.empty()) {
      return;
    }
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> list(tensors.begin(), tensors.end());
    const auto buckets = detail::make_buckets(list, bucket_bytes);
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (const auto& bucket : buckets) {
      flats.push_back(detail::flatten(list, bucket));
      std::vector<at::Tensor> one{flats.back()};
      if (reduce) {
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        works.push_back(group_->allreduce(one, options));
      } else {
        c10d::BroadcastOptions options;
        options.rootRank = root;
        works.push_back(group_->broadcast(one, options));
      }
    }
    for (size_t b = 0; b < buckets.size(); ++b) {
      wait(works[b], reduce ? "all_reduce" : "broadcast");
      detail::unflatten(flats[b], list, buckets[b]);
    }
#else
    (void)reduce;
    (void)root;
#endif
  }

  Environment env_;
  std::chrono::milliseconds timeout_;
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
#endif
};

/// Gives every process rank 0's parameters and buffers. Throws, naming
/// both, if this process's module has other tensors than rank 0's.
inline void broadcast_module(torch::nn::Module& module, Group& group) {
  if (group.size() == 1) {
    return;
  }
  std::vector<torch::Tensor> tensors = module.parameters();
  for (const auto& b : module.buffers()) {
    if (b.defined()) {
      tensors.push_back(b);
    }
  }
  // What the module holds: tensor count, elements, and a hash of shapes
  // and dtypes; rank 0's goes to all, each compares with its own.
  int64_t elements = 0;
  uint64_t hash = 1469598103934665603ULL;
  auto mix = [&hash](int64_t v) {
    hash = (hash ^ static_cast<uint64_t>(v)) * 1099511628211ULL;
  };
  for (const auto& t : tensors) {
    elements += t.numel();
    mix(static_cast<int64_t>(t.scalar_type()));
    mix(t.dim());
    for (auto s : t.sizes()) {
      mix(s);
    }
  }
  const auto mine = torch::tensor(
      {static_cast<int64_t>(tensors.size()),
       elements,
       static_cast<int64_t>(hash)},
      torch::kLong);
  auto root = mine.clone();
  group.broadcast_({root}, 0);
  TORCH_CHECK(
      torch::equal(mine, root),
      "resnet: broadcast_module: rank ",
      group.rank(),
      "'s module has ",
      mine[0].item<int64_t>(),
      " tensors with ",
      mine[1].item<int64_t>(),
      " elements, rank 0's has ",
      root[0].item<int64_t>(),
      " with ",
      root[1].item<int64_t>(),
      (mine[2].item<int64_t>() == root[2].item<int64_t>()
           ? ""
           : " (tensors of other shapes or dtypes)"));
  group.broadcast_(tensors, 0);
}

/// Averages the gradients of `module`'s parameters over the processes;
/// call it after backward() and before the optimizer step. A parameter
/// without a gradient in this process (not used by its share of the batch)
/// counts as a zero gradient and gets the average; one that no process has
/// a gradient for keeps none, as on one process, so that the optimizer
/// skips it in every process alike. Parameters that do not require a
/// gradient are left out.
inline void average_gradients(
    torch::nn::Module& module,
    Group& group,
    int64_t bucket_bytes = default_bucket_bytes) {
  if (group.size() == 1) {
    return;
  }
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> params;
  for (const auto& p : module.parameters()) {
    if (p.requires_grad()) {
      params.push_back(p);
    }
  }
  // Which processes have a gradient for each parameter travels with them.
  auto has_grad = torch::zeros({static_cast<int64_t>(params.size())});
  std::vector<torch::Tensor> grads{has_grad};
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& g = params[i].grad();
    TORCH_CHECK(
        !g.defined() || g.layout() == torch::kStrided,
        "resnet: average_gradients does not support sparse gradients");
    if (g.defined()) {
      has_grad[static_cast<int64_t>(i)].fill_(1.0);
    }
    grads.push_back(g.defined() ? g : torch::zeros_like(params[i]));
  }
  group.all_reduce_mean_(grads, bucket_bytes);
  const auto used = has_grad.gt(0);
  const auto used_by_some = used.accessor<bool, 1>();
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].grad().defined() && used_by_some[static_cast<int64_t>(i)]) {
      params[i].mutable_grad() = grads[i + 1];
    }
  }
}

} // namespace resnet::distributed
