#pragma once

// The processes that train together: a c10d process group (Gloo for CPU
// tensors, NCCL for CUDA tensors where built with it) joined through
// torchrun's store, with the collectives training needs.

#include <resnet/config.h>
#include <resnet/device.h>
#include <resnet/error.h>
#include <resnet/train/distributed/detail/tensors.h>
#include <resnet/train/distributed/environment.h>

#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/version.h>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if RESNET_WITH_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if RESNET_WITH_NCCL
#include <torch/csrc/cuda/nccl.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace resnet::distributed {

/// Bytes of gradients reduced by one collective (PyTorch DDP's default).
inline constexpr int64_t default_bucket_bytes = 25 * 1024 * 1024;

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

/// The same for a device named as parse_device reads it (a command line's
/// --device); empty: default_device().
inline torch::Device process_device(
    const std::string& name,
    const Environment& env) {
  return process_device(
      name.empty() ? default_device() : parse_device(name), env);
}

namespace detail {

// A write to the socket of a peer that died raises SIGPIPE, which by
// default ends the process before Gloo can report the peer as gone. Python
// ignores SIGPIPE from its start, so PyTorch's ranks get the error instead;
// the same here, unless the program has chosen what SIGPIPE does.
inline void ignore_broken_pipes() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 &&
      current.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
}

} // namespace detail

/// The processes that train together, joined through c10d's TCPStore:
/// Gloo carries CPU tensors, NCCL CUDA tensors where this build has it
/// (nccl_available() and a GPU; Gloo otherwise). Every process must make
/// the same calls in the same order with tensors of the same shapes and
/// devices; a peer that dies or falls behind by more than the timeout makes
/// the others' calls throw (NCCL's watchdog ends the process instead). A
/// group of several processes ignores SIGPIPE, as Python does, unless the
/// program set a handler: a dead peer's socket is then an error, not the
/// end of the process.
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
#if RESNET_WITH_C10D
    detail::ignore_broken_pipes();
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

  /// Moves the connection; the moved-from group is not to be used.
  Group(Group&&) = default;

  /// Another group of the same processes whose collectives never pair with
  /// this one's, however the calls of the two interleave (e.g. gradients
  /// sent while backward runs, beside synchronized batch norm's). Every
  /// process must open its channels in the same order (`name` only labels
  /// them in messages).
  Group channel(const std::string& name) {
    Group other(env_, timeout_, Private{});
#if RESNET_WITH_C10D
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

  /// This process's index, in [0, size()).
  int64_t rank() const {
    return env_.rank;
  }
  /// The number of processes (world size).
  int64_t size() const {
    return env_.world_size;
  }
  /// Each process's share of `total` (a batch size, say), which must split
  /// evenly over the processes; `what` names it in the error.
  int64_t share_of(int64_t total, const std::string& what) const {
    TORCH_CHECK(
        total % size() == 0,
        "resnet: ",
        what,
        " ",
        total,
        " does not split evenly over ",
        size(),
        " processes");
    return total / size();
  }
  /// The environment the group was joined with.
  const Environment& environment() const {
    return env_;
  }
  /// The bound on joining and on every collective.
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
#if RESNET_WITH_C10D
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
#if RESNET_WITH_C10D
    if (size() > 1) {
      wait(group_->barrier(), "barrier");
    }
#endif
  }

 private:
  struct Private {};
  Group(Environment env, std::chrono::milliseconds timeout, Private)
      : env_(std::move(env)), timeout_(timeout) {}

#if RESNET_WITH_C10D
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
#if RESNET_WITH_NCCL
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
#if RESNET_WITH_NCCL
    return t.is_cuda() && nccl_;
#else
    (void)t;
    return false;
#endif
  }

#if RESNET_WITH_NCCL
  using Carrier = c10d::Backend;
#else // LibTorch 1.13's Gloo is not a Backend yet
  using Carrier = c10d::ProcessGroupGloo;
#endif

  // The backend that carries `t`.
  Carrier& backend_for(const torch::Tensor& t) {
#if RESNET_WITH_NCCL
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
#if RESNET_WITH_C10D
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
#if RESNET_WITH_C10D
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
#if RESNET_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl_;
#endif
  int64_t channels_ = 0; // opened so far
#endif
};

/// The processes a launcher (torchrun, examples/launch.sh) started, from
/// the environment it set (from_environment), joined within
/// `timeout_seconds`, which also bounds every later collective; this
/// process alone when it was started by hand.
inline std::unique_ptr<Group> join_from_environment(double timeout_seconds) {
  TORCH_CHECK(
      timeout_seconds > 0,
      "resnet: expected a positive timeout, got ",
      timeout_seconds,
      " s");
  return std::make_unique<Group>(
      from_environment(),
      std::chrono::milliseconds(std::max<int64_t>(
          1, static_cast<int64_t>(std::llround(timeout_seconds * 1000)))));
}

} // namespace resnet::distributed
