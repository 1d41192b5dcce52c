#pragma once

// Stopping a training run cleanly: Ctrl-C as a request the loop polls, so
// that it saves a checkpoint first; and fault injection for crash-safety
// tests.

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

namespace resnet {

namespace detail {
inline std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}
inline void on_interrupt(int) {
  interrupt_flag() = true;
  std::signal(SIGINT, SIG_DFL); // a second Ctrl-C ends the program at once
}
} // namespace detail

/// Makes Ctrl-C (SIGINT) a request to stop that a training loop polls with
/// `interrupt_requested()`, so that it can save a checkpoint first; a second
/// Ctrl-C ends the program at once.
inline void stop_on_interrupt() {
  detail::interrupt_flag() = false;
  std::signal(SIGINT, detail::on_interrupt);
}
/// Whether Ctrl-C was pressed since `stop_on_interrupt()`.
inline bool interrupt_requested() {
  return detail::interrupt_flag();
}

/// A fault-injection point for crash-safety tests: when the environment
/// variable `variable` equals `name`, the process kills itself (SIGKILL)
/// on the spot, as a power cut or `kill -9` would.
inline void crash_point(
    const std::string& name,
    const char* variable = "RESNET_CRASH_AT") {
  const char* at = std::getenv(variable);
  if (at != nullptr && name == at) {
    std::cout << std::flush;
    std::raise(SIGKILL);
  }
}

} // namespace resnet
