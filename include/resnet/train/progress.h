#pragma once

// Reporting progress: elapsed time, durations, and a progress line redrawn in
// place on a terminal.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <stdio.h>
#include <unistd.h>
#endif

namespace resnet {

/// Seconds elapsed since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// The seconds since `start`, which then moves to now: the time of one lap.
inline double lap(std::chrono::steady_clock::time_point& start) {
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - start).count();
  start = now;
  return seconds;
}

/// Minutes and seconds, "m:ss".
inline std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream o;
  o << s / 60 << ":" << std::setw(2) << std::setfill('0') << s % 60;
  return o.str();
}

/// A progress bar for a loop of `total` steps, such as an epoch: redrawn in
/// place on a terminal; on other output (a log file) printed when each
/// quarter is reached.
class ProgressLine {
 public:
  /// `unit` names what `update` counts, for the rate ("img" gives img/s).
  ProgressLine(
      std::string label,
      int64_t total,
      bool enabled = true,
      std::string unit = "items")
      : label_(std::move(label)),
        unit_(std::move(unit)),
        total_(std::max<int64_t>(1, total)),
        enabled_(enabled),
        start_(std::chrono::steady_clock::now()) {
#if defined(__unix__) || defined(__APPLE__)
    tty_ = ::isatty(::fileno(stdout)) != 0;
#endif
  }

  /// Shows step `done` of the total with `text` (e.g. the loss so far), the
  /// rate of `items` (processed since construction) per second and the time
  /// left.
  void update(int64_t done, const std::string& text, int64_t items) {
    const bool last = done >= total_;
    const bool quarter = (4 * done) / total_ != (4 * (done - 1)) / total_;
    if (!enabled_ || (!tty_ && !last && !quarter)) {
      return;
    }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
            .count();
    constexpr int64_t kWidth = 24;
    const auto filled = static_cast<size_t>(kWidth * done / total_);
    std::ostringstream line;
    line << label_ << " [" << std::string(filled, '#')
         << std::string(static_cast<size_t>(kWidth) - filled, '.') << "] "
         << done << "/" << total_ << " " << text << " " << std::fixed
         << std::setprecision(0)
         << static_cast<double>(items) / std::max(elapsed, 1e-9) << " " << unit_
         << "/s ETA "
         << format_duration(
                elapsed / static_cast<double>(std::max<int64_t>(1, done)) *
                static_cast<double>(total_ - done));
    std::cout << (tty_ ? "\r" : "") << line.str() << (tty_ && !last ? "" : "\n")
              << std::flush;
  }

 private:
  std::string label_, unit_;
  int64_t total_;
  bool enabled_;
  bool tty_ = false;
  std::chrono::steady_clock::time_point start_;
};

} // namespace resnet
