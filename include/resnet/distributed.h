#pragma once

// Data-parallel training over LibTorch's own c10d (Gloo; NCCL for CUDA
// tensors where built with it): every process holds a copy of the model and
// a share of the batch; the processes start from rank 0's weights and
// average their gradients in buckets while each backward pass runs
// (DataParallel; average_gradients after it), so that one optimizer step in
// each equals a step on the whole batch.
//
// The processes meet as torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT (from_environment); rank 0 (or torchrun 2.x's
// agent) serves a TCPStore at MASTER_ADDR:MASTER_PORT through which the
// others find it.
//
// c10d's Gloo headers need Gloo's own headers (Debian: libgloo-dev), which
// not every LibTorch build comes with (PyPI's wheels have none). Define
// RESNET_WITH_C10D=1 where <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
// compiles (with USE_DISTRIBUTED and USE_C10D_GLOO, which LibTorch's CMake
// target defines); without it available() is false and a Group of more than
// one process cannot be made, while a single process (no RANK/WORLD_SIZE)
// still works, every collective then being a no-op. NCCL (nccl_available())
// needs RESNET_WITH_NCCL=1 and USE_C10D_NCCL, with the nccl.h LibTorch was
// built with (cmake/resnetC10d.cmake finds it). Not part of
// <resnet/resnet.h>.

#include <resnet/detail/describe.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
#if !defined(USE_C10D_GLOO)
// LibTorch's CMake target defines both.
#error "RESNET_WITH_C10D needs USE_C10D_GLOO and USE_DISTRIBUTED defined"
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
#if !defined(USE_C10D_NCCL)
#error "RESNET_WITH_NCCL needs USE_C10D_NCCL defined"
#endif
#include <torch/csrc/cuda/nccl.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
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

/// Whether CUDA tensors travel through NCCL (a CUDA LibTorch with the nccl.h
/// it was built with; define RESNET_WITH_NCCL=1 and USE_C10D_NCCL) rather
/// than through Gloo, which copies them to the CPU and back.
constexpr bool nccl_available() {
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D && \
    defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
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

/// How long a process waits for the first answer of a store the launcher
/// serves (torchrun 2.x's agent), which is up before any process starts: a
/// store that does not answer in this time speaks another protocol.
inline constexpr std::chrono::milliseconds agent_store_probe{
    std::chrono::seconds(10)};

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
  /// The launcher serves the store (torchrun 2.x's agent does, and says so
  /// with TORCHELASTIC_USE_AGENT_STORE=True); otherwise rank 0 serves it.
  bool agent_store = false;
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
/// MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default 29500) and
/// TORCHELASTIC_USE_AGENT_STORE (True: the launcher serves the store). Without
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
  if (const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) {
    env.agent_store = std::string(agent) == "True";
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
// `bucket_bytes` (a larger tensor is a bucket alone; the first bucket to
// close holds at most `first_bucket_bytes`, if given). The same list gives
// the same buckets in every process, in the order they close.
inline std::vector<Bucket> make_buckets(
    const std::vector<torch::Tensor>& tensors,
    int64_t bucket_bytes,
    int64_t first_bucket_bytes = 0) {
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
    const int64_t cap = done.empty() && first_bucket_bytes > 0
        ? first_bucket_bytes
        : bucket_bytes;
    if (k < open.size() && open[k].bytes + bytes > cap) {
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

// The members of a bucket as one contiguous tensor, on the CPU (where Gloo
// reduces them) unless `on_device`.
inline torch::Tensor flatten(
    const std::vector<torch::Tensor>& tensors,
    const Bucket& bucket,
    bool on_device = false) {
  std::vector<torch::Tensor> flat;
  flat.reserve(bucket.members.size());
  for (auto i : bucket.members) {
    flat.push_back(tensors[i].reshape({-1}));
  }
  auto whole = torch::cat(flat);
  return on_device ? whole : whole.to(torch::kCPU);
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

/// The device for a process that `env` describes: `device` itself, except
/// that CUDA without an index becomes GPU LOCAL_RANK (modulo the GPUs there
/// are), so that the processes of a machine each take their own.
inline torch::Device process_device(
    torch::Device device,
    const Environment& env) {
  if (!device.is_cuda() || device.has_index() || env.world_size == 1) {
    return device;
  }
  const auto gpus = static_cast<int64_t>(torch::cuda::device_count());
  TORCH_CHECK(gpus > 0, "resnet: ", device, " asked for, but there is no GPU");
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % gpus)};
}

/// The processes that train together, joined through c10d's TCPStore:
/// Gloo carries CPU tensors, NCCL CUDA tensors where this build has it
/// (nccl_available() and a GPU; Gloo otherwise). Every process must make
/// the same calls in the same order with tensors of the same shapes and
/// devices; a peer that dies or falls behind by more than the timeout makes
/// the others' calls throw (NCCL's watchdog ends the process instead).
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
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(env_.master_port);
    store_options.isServer = env_.rank == 0 && !env_.agent_store;
    store_options.numWorkers = static_cast<std::size_t>(env_.world_size);
    // Every process checks in; rank 0's store waits for all of them.
    store_options.waitWorkers = !env_.agent_store;
    store_options.timeout = timeout_;
    // A launcher's store is checked first, with errors of its own.
    c10::intrusive_ptr<c10d::Store> tcp;
    if (env_.agent_store) {
      tcp = launcher_store(store_options);
    }
    try {
      if (!tcp) {
        tcp = c10::make_intrusive<c10d::TCPStore>(
            env_.master_addr, store_options);
      }
      // Our keys apart from a launcher's own in a store it serves.
      store_ = c10::make_intrusive<c10d::PrefixStore>("resnet", tcp);
      connect("main");
    } catch (const std::exception& e) {
      could_not(
          "join " + std::to_string(env_.world_size) + " processes at " +
              env_.master_addr + ":" + std::to_string(env_.master_port),
          e);
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

  Group(Group&&) = default;

  /// Another group of the same processes whose collectives never pair with
  /// this one's, however the calls of the two interleave (e.g. gradients
  /// sent while backward runs, beside synchronized batch norm's). Every
  /// process must open its channels in the same order (`name` only labels
  /// them in messages).
  Group channel(const std::string& name) {
    Group other(env_, timeout_, Private{});
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
    if (size() > 1) {
      other.store_ = store_;
      try {
        other.connect("channel" + std::to_string(++channels_));
      } catch (const std::exception& e) {
        could_not(
            "open channel '" + name + "' of " +
                std::to_string(env_.world_size) + " processes",
            e);
      }
    }
#else
    (void)name;
#endif
    return other;
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

  /// The element-wise sums of `values` over the processes, e.g. of counts
  /// and flags (float64: whole numbers below 2^53 stay exact).
  std::vector<double> sum(std::vector<double> values) {
    if (size() == 1 || values.empty()) {
      return values;
    }
    auto t = torch::tensor(values, torch::kDouble);
    all_reduce_sum_({t});
    return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
  }

  /// Throws in every process unless all pass the same `value` (`what`
  /// names it in the message), e.g. the step each resumed from.
  void expect_same(int64_t value, const std::string& what) {
    if (size() == 1) {
      return;
    }
    auto first = torch::tensor({value}, torch::kLong);
    broadcast_({first});
    const int64_t expected = first.item<int64_t>();
    const double others = sum({expected == value ? 0.0 : 1.0})[0];
    TORCH_CHECK(
        others == 0,
        "resnet: ",
        others,
        " of ",
        size(),
        " processes have another ",
        what,
        " than rank 0's ",
        expected,
        " (rank ",
        rank(),
        ": ",
        value,
        ")");
  }

  /// Starts replacing `tensor` by its sum over the processes and returns at
  /// once; the function returned waits for the sum (and throws as the other
  /// collectives do). Other collectives may be started before waiting, in
  /// the same order in every process. A CUDA tensor is summed where it is.
  std::function<void()> start_all_reduce_sum_(torch::Tensor tensor) {
    detail::check_tensors({tensor}, "start_all_reduce_sum_");
    if (size() == 1) {
      return [] {};
    }
#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
    torch::NoGradGuard no_grad;
    TORCH_CHECK(
        tensor.is_contiguous(),
        "resnet: start_all_reduce_sum_ expects a contiguous tensor");
    return waiter(launch(tensor, true, -1), "all_reduce");
#else
    return [] {};
#endif
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
  struct Private {};
  Group(Environment env, std::chrono::milliseconds timeout, Private)
      : env_(std::move(env)), timeout_(timeout) {}

#if defined(RESNET_WITH_C10D) && RESNET_WITH_C10D
  // Gloo's pairs for the collectives of channel `name`, and NCCL's
  // communicators (made at their first collective) where there is a GPU.
  void connect(const std::string& name) {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
    options->devices.push_back(device_for(env_.master_addr));
    group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>(name, store_),
        static_cast<int>(env_.rank),
        static_cast<int>(env_.world_size),
        options);
#if defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
    if (torch::cuda::is_available()) {
      // Options holds NCCL's structs: their layout must be LibTorch's.
      constexpr std::uint64_t ours = (std::uint64_t{NCCL_MAJOR} << 32) |
          (std::uint64_t{NCCL_MINOR} << 16) | std::uint64_t{NCCL_PATCH};
      const std::uint64_t torchs = torch::cuda::nccl::version();
      TORCH_CHECK(
          torchs == ours,
          "resnet: compiled with nccl.h of NCCL ",
          NCCL_MAJOR,
          ".",
          NCCL_MINOR,
          ".",
          NCCL_PATCH,
          ", but LibTorch was built with NCCL ",
          torchs >> 32,
          ".",
          (torchs >> 16) & 0xffff,
          ".",
          torchs & 0xffff,
          "; build with LibTorch's own nccl.h (RESNET_NCCL_INCLUDE_DIR)");
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout_;
      nccl_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>(name + "/nccl", store_),
          static_cast<int>(env_.rank),
          static_cast<int>(env_.world_size),
          nccl_options);
    }
#endif
  }

  // Whether `t` travels through NCCL.
  bool by_nccl(const torch::Tensor& t) const {
#if defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
    return t.is_cuda() && nccl_;
#else
    (void)t;
    return false;
#endif
  }

#if defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
  using Carrier = c10d::Backend;
#else // LibTorch 1.13's Gloo is not a Backend yet
  using Carrier = c10d::ProcessGroupGloo;
#endif

  // The backend that carries `t`.
  Carrier& backend_for(const torch::Tensor& t) {
#if defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
    if (by_nccl(t)) {
      return *nccl_;
    }
#endif
    (void)t;
    return *group_;
  }

  // The store the launcher serves (torchrun 2.x's agent), checked with one
  // round trip of at most agent_store_probe: a store that speaks another
  // protocol (torchrun 2.x's, to a program built against LibTorch 1.x)
  // never answers, and every rank would wait the whole timeout before
  // failing; this fails at once, with the remedy.
  c10::intrusive_ptr<c10d::Store> launcher_store(
      c10d::TCPStoreOptions options) const {
    options.timeout = std::min(timeout_, agent_store_probe);
    c10::intrusive_ptr<c10d::TCPStore> store;
    try {
      store = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, options);
      // A set and a get of the same key: LibTorch 1.x's client waits for
      // the answer to a get at most the store's timeout (it would wait
      // for ever for an add's).
      const std::string probe = "resnet/probe/" + std::to_string(env_.rank);
      store->set(probe, std::vector<uint8_t>{1});
      store->get(probe);
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false,
          "resnet: rank ",
          env_.rank,
          " got no answer within ",
          options.timeout.count(),
          " ms from the launcher's store at ",
          env_.master_addr,
          ":",
          env_.master_port,
          " (TORCHELASTIC_USE_AGENT_STORE=True): it is not there, or its "
          "protocol is not the one of this program's LibTorch " TORCH_VERSION
          " (torchrun 2.x serves a store LibTorch 1.x cannot talk to). Start "
          "the program with examples/launch.sh, which works with every "
          "LibTorch, or build it against the LibTorch of the torchrun you "
          "use (",
          error_message(e),
          ")");
    }
    store->setTimeout(timeout_);
    return store;
  }

  // Throws: this process could not `what` (join, open a channel) in time.
  void could_not(const std::string& what, const std::exception& e) const {
    TORCH_CHECK(
        false,
        "resnet: rank ",
        env_.rank,
        " could not ",
        what,
        " within ",
        timeout_.count(),
        " ms: ",
        error_message(e));
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
    waiter(work, what)();
  }

  // Waits for `work` when called; holds copies, not the group, so that the
  // group may move meanwhile.
  std::function<void()> waiter(
      c10::intrusive_ptr<c10d::Work> work,
      const char* what) const {
    return [work = std::move(work),
            what,
            rank = rank(),
            size = size(),
            timeout = timeout_.count()] {
      try {
        work->wait();
      } catch (const std::exception& e) {
        TORCH_CHECK(
            false,
            "resnet: ",
            what,
            " failed on rank ",
            rank,
            " of ",
            size,
            " (a peer died, or did not call it within ",
            timeout,
            " ms): ",
            error_message(e));
      }
    };
  }

  // Starts the sum (`reduce`) or the broadcast from `root` of one flat
  // tensor on the backend that carries it.
  c10::intrusive_ptr<c10d::Work>
  launch(const torch::Tensor& flat, bool reduce, int64_t root) {
    std::vector<at::Tensor> one{flat};
    if (reduce) {
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      return backend_for(flat).allreduce(one, options);
    }
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return backend_for(flat).broadcast(one, options);
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
      flats.push_back(
          detail::flatten(list, bucket, by_nccl(list[bucket.members[0]])));
      works.push_back(launch(flats.back(), reduce, root));
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
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
#if defined(RESNET_WITH_NCCL) && RESNET_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl_;
#endif
  int64_t channels_ = 0; // opened so far
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

/// How DataParallel sends gradients.
struct DataParallelOptions {
  /// Send each bucket as soon as backward has filled it (true), or all of
  /// them in finish(). Overlapping pays where computing leaves the CPU
  /// cores some time (a GPU, spare cores); with every core computing, the
  /// sums compete with backward for them (measured in the README).
  TORCH_ARG(bool, overlap) = true;
  /// Bytes of gradients summed by one collective.
  TORCH_ARG(int64_t, bucket_bytes) = default_bucket_bytes;
  /// Bytes of the first bucket, small so that sending starts early.
  TORCH_ARG(int64_t, first_bucket_bytes) = 1024 * 1024;
};

/// Data-parallel training of `module` in this process: the constructor gives
/// every process rank 0's parameters and buffers (broadcast_module); then
/// each backward pass starts averaging the gradients while it runs. As
/// soon as backward has produced every gradient of a bucket, the bucket's
/// sum over the processes starts; finish() waits for the rest and writes
/// the averages. Call finish() after each backward pass, before the
/// optimizer step:
///
///   resnet::distributed::DataParallel parallel(*model, group);
///   ...
///   loss.backward();
///   parallel.finish();
///   optimizer.step();
///
/// After finish(), every parameter's gradient is the mean over the
/// processes of its gradient there (what average_gradients computes after
/// backward, and the same numbers): a gradient accumulated over earlier
/// passes counts, a parameter without a gradient in this process counts as
/// zero, and one that no process has a gradient for keeps none. Passes
/// made with set_synchronizing(false) only accumulate (Python DDP's
/// no_sync()): the next synchronizing pass averages the sum.
///
/// Buckets go out strictly in the same order in every process, as
/// collectives must. In the first pass they follow the reverse order of the
/// parameters (the order in which backward usually produces them); its
/// finish() rebuilds them in the order rank 0 actually received the
/// gradients, parameters it received none for last, so that no bucket
/// waits for a late or missing gradient while later ones are full. The
/// first bucket is small (1 MiB) so that communication starts early. The
/// buckets travel on a channel of their own (Group::channel), apart from
/// the collectives that backward itself makes (synchronized batch norm's)
/// and whatever the caller sends between passes. The
/// module's parameters must not be replaced while this object lives (it
/// hooks them); with one process it does nothing.
class DataParallel {
 public:
  explicit DataParallel(
      torch::nn::Module& module,
      Group& group,
      DataParallelOptions options = {})
      : group_(group.channel("gradients")), options_(options) {
    TORCH_CHECK(
        options.bucket_bytes() > 0 && options.first_bucket_bytes() > 0,
        "resnet: DataParallel expects positive bucket sizes, got ",
        options.bucket_bytes(),
        " and ",
        options.first_bucket_bytes());
    broadcast_module(module, group);
    if (group.size() == 1) {
      return;
    }
    const auto named = module.named_parameters();
    for (auto it = named.end(); it != named.begin();) {
      --it;
      if (it->value().requires_grad()) {
        names_.push_back(it->key());
        params_.push_back(it->value());
      }
    }
    std::vector<size_t> order(params_.size());
    for (size_t i = 0; i < order.size(); ++i) {
      order[i] = i;
    }
    build(order);
    hooks_.reserve(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      hooks_.push_back(params_[i].register_hook(
          [this, i](const torch::Tensor& grad) { on_gradient(i, grad); }));
    }
  }

  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  ~DataParallel() {
    for (size_t i = 0; i < hooks_.size(); ++i) {
      params_[i].remove_hook(hooks_[i]);
    }
  }

  /// Whether the next backward passes take part (true, the default) or
  /// only accumulate gradients in this process. Set it between passes.
  void set_synchronizing(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    synchronizing_ = on;
  }

  /// Sends what the backward pass has not sent, waits for every sum and
  /// replaces each gradient by its mean over the processes.
  void finish() {
    if (group_.size() == 1) {
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    torch::NoGradGuard no_grad;
    overlapped_ = next_;
    // Gradients backward did not bring in this pass: those from earlier
    // passes, or zeros.
    auto has = torch::zeros({static_cast<int64_t>(params_.size())});
    auto has_a = has.accessor<float, 1>();
    for (size_t i = 0; i < params_.size(); ++i) {
      if (slots_[i].filled) {
        has_a[static_cast<int64_t>(i)] = 1;
        continue;
      }
      const auto& g = params_[i].grad();
      TORCH_CHECK(
          !g.defined() || g.layout() == torch::kStrided,
          "resnet: DataParallel does not support sparse gradients (",
          names_[i],
          ")");
      auto slot = slot_of(i);
      if (g.defined()) {
        slot.copy_(g);
        has_a[static_cast<int64_t>(i)] = 1;
      } else {
        slot.zero_();
      }
    }
    while (next_ < buckets_.size()) {
      start(next_++);
    }
    auto has_wait = group_.start_all_reduce_sum_(has);
    std::exception_ptr failed;
    for (auto& b : buckets_) {
      try {
        b.wait();
      } catch (...) {
        failed = failed ? failed : std::current_exception();
      }
      b.wait = nullptr;
    }
    if (!failed) {
      try {
        has_wait();
      } catch (...) {
        failed = std::current_exception();
      }
    }
    if (failed) {
      rearm();
      std::rethrow_exception(failed);
    }
    const auto n = static_cast<double>(group_.size());
    for (auto& b : buckets_) {
      b.flat.div_(n);
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      if (has_a[static_cast<int64_t>(i)] == 0) {
        continue; // no process has a gradient for it
      }
      auto mean = slot_of(i);
      auto& g = params_[i].mutable_grad();
      if (g.defined()) {
        g.copy_(mean);
      } else {
        g = mean.clone();
      }
    }
    if (!rebuilt_) {
      // Once: buckets in the order the first pass brought gradients in.
      rebuild_from_arrivals();
    }
    rearm();
  }

  /// How many buckets the last finish() found already sent during the
  /// backward pass, out of buckets() (the overlap achieved).
  size_t overlapped() const {
    return overlapped_;
  }
  size_t buckets() const {
    return buckets_.size();
  }

 private:
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0;
    bool filled = false;
  };
  struct BucketState {
    std::vector<size_t> members;
    torch::Tensor flat;
    size_t missing = 0; // gradients still to come in this pass
    std::function<void()> wait;
  };

  torch::Tensor slot_of(size_t i) {
    const auto& p = params_[i];
    return buckets_[slots_[i].bucket]
        .flat.narrow(0, slots_[i].offset, p.numel())
        .view(p.sizes());
  }

  // Buckets of the parameters in `order` (indices into params_), the
  // first to be sent first.
  void build(const std::vector<size_t>& order) {
    std::vector<torch::Tensor> ordered;
    for (auto i : order) {
      ordered.push_back(params_[i]);
    }
    const auto buckets = detail::make_buckets(
        ordered, options_.bucket_bytes(), options_.first_bucket_bytes());
    slots_.assign(params_.size(), Slot{});
    buckets_.clear();
    for (const auto& bucket : buckets) {
      BucketState state;
      int64_t offset = 0;
      for (auto k : bucket.members) {
        const size_t i = order[k];
        state.members.push_back(i);
        slots_[i].bucket = buckets_.size();
        slots_[i].offset = offset;
        offset += params_[i].numel();
      }
      state.flat = torch::empty({offset}, params_[state.members[0]].options());
      buckets_.push_back(std::move(state));
    }
    rearm();
  }

  // Rank 0's arrival order (then the parameters backward did not reach
  // there), so that a bucket does not wait for a gradient that comes late
  // or never while later ones are ready. Every process takes rank 0's.
  void rebuild_from_arrivals() {
    rebuilt_ = true;
    std::vector<bool> seen(params_.size(), false);
    std::vector<int64_t> order;
    for (auto i : arrivals_) {
      seen[i] = true;
      order.push_back(static_cast<int64_t>(i));
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!seen[i]) {
        order.push_back(static_cast<int64_t>(i));
      }
    }
    auto shared = torch::tensor(order, torch::kLong);
    group_.broadcast_({shared});
    std::vector<size_t> chosen;
    for (int64_t k = 0; k < shared.numel(); ++k) {
      chosen.push_back(static_cast<size_t>(shared[k].item<int64_t>()));
    }
    arrivals_.clear();
    build(chosen);
  }

  void rearm() {
    for (auto& s : slots_) {
      s.filled = false;
    }
    for (auto& b : buckets_) {
      b.missing = b.members.size();
    }
    next_ = 0;
  }

  void start(size_t b) {
    buckets_[b].wait = group_.start_all_reduce_sum_(buckets_[b].flat);
  }

  // Backward's gradient for parameter i, before it is added to .grad: the
  // bucket takes it plus what .grad holds already (the sum .grad is about
  // to become); full buckets go out in order.
  void on_gradient(size_t i, const torch::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!synchronizing_) {
      return;
    }
    TORCH_CHECK(
        !slots_[i].filled,
        "resnet: DataParallel: a second gradient for '",
        names_[i],
        "' before finish(); call finish() after every backward pass, or "
        "set_synchronizing(false) for passes that only accumulate");
    TORCH_CHECK(
        grad.layout() == torch::kStrided,
        "resnet: DataParallel does not support sparse gradients (",
        names_[i],
        ")");
    torch::NoGradGuard no_grad;
    auto slot = slot_of(i);
    slot.copy_(grad);
    const auto& before = params_[i].grad();
    if (before.defined()) {
      slot.add_(before);
    }
    slots_[i].filled = true;
    if (!rebuilt_) {
      arrivals_.push_back(i);
    }
    if (--buckets_[slots_[i].bucket].missing > 0 || !options_.overlap()) {
      return;
    }
    while (next_ < buckets_.size() && buckets_[next_].missing == 0) {
      start(next_++);
    }
  }

  Group group_; // a channel of the caller's group
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_; // last registered first
  std::vector<Slot> slots_;
  std::vector<BucketState> buckets_;
  std::vector<unsigned> hooks_;
  std::mutex mutex_;
  DataParallelOptions options_;
  std::vector<size_t> arrivals_; // until rebuilt_: the order of arrival
  bool rebuilt_ = false;
  bool synchronizing_ = true;
  size_t next_ = 0; // the next bucket to send
  size_t overlapped_ = 0;
};

namespace detail {

/// y = (x - mean) * invstd * weight + bias with the statistics of the whole
/// batch across the processes; backward reduces the two per-channel sums
/// the input's gradient needs over the processes too (PyTorch's
/// SyncBatchNorm's rule), so that averaging the gradients afterwards gives
/// those of one process with the whole batch.
struct SyncBatchNormFunction
    : torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      const torch::Tensor& input,
      const torch::Tensor& weight,
      const torch::Tensor& bias,
      const torch::Tensor& mean,
      const torch::Tensor& invstd,
      double count,
      Group* group) {
    const auto shape = std::vector<int64_t>{1, mean.size(0), 1, 1};
    const auto x = input.to(torch::kFloat);
    const auto xhat = (x - mean.view(shape)) * invstd.view(shape);
    ctx->save_for_backward({input, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["group"] =
        static_cast<int64_t>(reinterpret_cast<std::intptr_t>(group));
    return (xhat * weight.view(shape) + bias.view(shape)).to(input.dtype());
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_output) {
    const auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    const auto& weight = saved[1];
    const auto& mean = saved[2];
    const auto& invstd = saved[3];
    const double count = ctx->saved_data["count"].toDouble();
    auto* group = reinterpret_cast<Group*>(
        static_cast<std::intptr_t>(ctx->saved_data["group"].toInt()));
    const auto shape = std::vector<int64_t>{1, mean.size(0), 1, 1};
    const auto g = grad_output[0].to(torch::kFloat);
    const auto xhat =
        (input.to(torch::kFloat) - mean.view(shape)) * invstd.view(shape);
    const auto sum_g = g.sum({0, 2, 3});
    const auto sum_g_xhat = (g * xhat).sum({0, 2, 3});
    // This process's shares of the affine gradients, averaged later with
    // the others'.
    const auto grad_weight = sum_g_xhat.clone();
    const auto grad_bias = sum_g.clone();
    auto sums = torch::cat({sum_g, sum_g_xhat});
    group->all_reduce_sum_({sums});
    const auto c = mean.size(0);
    const auto mean_g = (sums.slice(0, 0, c) / count).view(shape);
    const auto mean_g_xhat = (sums.slice(0, c) / count).view(shape);
    const auto grad_input =
        (weight * invstd).view(shape) * (g - mean_g - xhat * mean_g_xhat);
    return {
        grad_input.to(input.dtype()),
        grad_weight,
        grad_bias,
        torch::Tensor(),
        torch::Tensor(),
        torch::Tensor(),
        torch::Tensor()};
  }
};

} // namespace detail

/// Batch normalization whose training-mode statistics are those of the whole
/// batch across the processes of a Group (PyTorch's SyncBatchNorm): with
/// GroupNorm's exactness, the same as one process with the whole batch. A
/// `torch::nn::BatchNorm2d` in every other respect (options, parameter and
/// buffer names, eval mode, weights; fuse_for_inference does not take it:
/// load its weights into a network with BatchNorm2d for that): build a network
/// with it as the normalization, e.g.
/// `resnet::create<SyncBatchNorm2d>("resnet50")`, then
/// synchronize_batch_norm(model, group). Without a group, with one process
/// or in eval mode it is plain batch norm. Computes in float32 (the output
/// in the input's dtype); 4-D input [N, C, H, W], every process with a
/// batch of at least one sample.
class SyncBatchNorm2dImpl : public torch::nn::Cloneable<SyncBatchNorm2dImpl> {
 public:
  explicit SyncBatchNorm2dImpl(const torch::nn::BatchNormOptions& options_)
      : options(options_) {
    SyncBatchNorm2dImpl::reset();
  }

  /// Makes the parameters (weight 1, bias 0) and the running statistics,
  /// as torch::nn::BatchNorm2d does.
  void reset() override {
    const int64_t c = options.num_features();
    TORCH_CHECK(c > 0, "resnet: SyncBatchNorm2d needs channels > 0");
    if (options.affine()) {
      weight = register_parameter("weight", torch::ones({c}));
      bias = register_parameter("bias", torch::zeros({c}));
    } else {
      weight = register_parameter("weight", torch::Tensor(), false);
      bias = register_parameter("bias", torch::Tensor(), false);
    }
    if (options.track_running_stats()) {
      running_mean = register_buffer("running_mean", torch::zeros({c}));
      running_var = register_buffer("running_var", torch::ones({c}));
      num_batches_tracked = register_buffer(
          "num_batches_tracked", torch::tensor(0, torch::kLong));
    } else {
      running_mean = register_buffer("running_mean", torch::Tensor());
      running_var = register_buffer("running_var", torch::Tensor());
      num_batches_tracked =
          register_buffer("num_batches_tracked", torch::Tensor());
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << std::boolalpha << "resnet::distributed::SyncBatchNorm2d("
           << options.num_features() << ", eps=" << options.eps()
           << ", momentum=";
    if (options.momentum().has_value()) {
      stream << *options.momentum();
    } else {
      stream << "None";
    }
    stream << ", affine=" << options.affine()
           << ", track_running_stats=" << options.track_running_stats() << ")";
  }

  /// The group to synchronize over (it must outlive the module's use);
  /// nullptr: none.
  void set_group(Group* group) {
    group_ = group;
  }
  Group* group() const {
    return group_;
  }

  torch::Tensor forward(const torch::Tensor& input) {
    if (group_ == nullptr || group_->size() == 1 || !is_training()) {
      return local_forward(input);
    }
    TORCH_CHECK(
        input.dim() == 4 && input.size(1) == options.num_features(),
        "resnet: SyncBatchNorm2d expects input [N, ",
        options.num_features(),
        ", H, W], got ",
        input.sizes());
    const int64_t c = input.size(1);
    const double n = static_cast<double>(input.numel() / c);
    torch::Tensor mean, invstd;
    double count = 0;
    {
      torch::NoGradGuard no_grad;
      // Per process: count, mean and variance (two-pass, float32); summed
      // in float64 as the count, the sum and the sum of squares.
      const auto x = input.to(torch::kFloat);
      const auto [var_r, mean_r] = torch::var_mean(x, {0, 2, 3}, false);
      const auto m = mean_r.to(torch::kDouble);
      auto sums = torch::cat(
          {torch::full({1}, n, torch::kDouble),
           m * n,
           (var_r.to(torch::kDouble) + m * m) * n});
      group_->all_reduce_sum_({sums});
      count = sums[0].item<double>();
      const auto mean64 = sums.slice(0, 1, 1 + c) / count;
      const auto var64 =
          (sums.slice(0, 1 + c) / count - mean64 * mean64).clamp_min(0);
      mean = mean64.to(torch::kFloat);
      invstd = (var64 + options.eps()).rsqrt().to(torch::kFloat);
      if (options.track_running_stats()) {
        num_batches_tracked += 1;
        const double momentum = options.momentum().has_value()
            ? *options.momentum()
            : 1.0 / num_batches_tracked.item<double>();
        const auto unbiased = var64 * (count / std::max(count - 1, 1.0));
        running_mean.mul_(1 - momentum)
            .add_(mean64.to(running_mean.dtype()), momentum);
        running_var.mul_(1 - momentum)
            .add_(unbiased.to(running_var.dtype()), momentum);
      }
    }
    const auto opts =
        torch::TensorOptions().dtype(torch::kFloat).device(input.device());
    const auto w =
        options.affine() ? weight.to(torch::kFloat) : torch::ones({c}, opts);
    const auto b =
        options.affine() ? bias.to(torch::kFloat) : torch::zeros({c}, opts);
    return detail::SyncBatchNormFunction::apply(
        input, w, b, mean, invstd, count, group_);
  }

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  // torch::nn::BatchNorm2d's forward pass: this process's batch only.
  torch::Tensor local_forward(const torch::Tensor& input) {
    double factor = 0;
    if (is_training() && options.track_running_stats()) {
      num_batches_tracked += 1;
      factor = options.momentum().has_value()
          ? *options.momentum()
          : 1.0 / num_batches_tracked.item<double>();
    }
    return torch::batch_norm(
        input,
        weight,
        bias,
        running_mean,
        running_var,
        is_training() || !options.track_running_stats(),
        factor,
        options.eps(),
        true);
  }

  Group* group_ = nullptr;
};
TORCH_MODULE(SyncBatchNorm2d);

/// Makes every SyncBatchNorm2d in `module` synchronize over `group` (which
/// must outlive their use); returns how many there are.
inline int64_t synchronize_batch_norm(torch::nn::Module& module, Group& group) {
  std::vector<torch::nn::Module*> all{&module};
  for (const auto& m : module.modules(/*include_self=*/false)) {
    all.push_back(m.get());
  }
  int64_t found = 0;
  for (auto* m : all) {
    if (auto* bn = dynamic_cast<SyncBatchNorm2dImpl*>(m)) {
      bn->set_group(&group);
      ++found;
    }
  }
  return found;
}

} // namespace resnet::distributed
