#pragma once

// How the processes of a run find each other: the variables torchrun sets
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), whether this
// build can run more than one process (RESNET_WITH_C10D, RESNET_WITH_NCCL
// in <resnet/config.h>), and how long a process waits for the others.

#include <resnet/config.h>

#include <c10/util/Exception.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace resnet::distributed {

/// Whether this build can run more than one process (c10d with Gloo).
constexpr bool available() {
#if RESNET_WITH_C10D
  return true;
#else
  return false;
#endif
}

/// Whether CUDA tensors travel through NCCL (a CUDA LibTorch with the nccl.h
/// it was built with; define RESNET_WITH_NCCL=1 and USE_C10D_NCCL) rather
/// than through Gloo, which copies them to the CPU and back.
constexpr bool nccl_available() {
#if RESNET_WITH_C10D && RESNET_WITH_NCCL
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

} // namespace resnet::distributed
