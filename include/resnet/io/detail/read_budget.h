#pragma once

// What reading one weight file may cost, in proportion to the file: the
// readers charge every allocation that does not end up as tensor data
// (pickled values, record names, inflated records, state-dict keys, listing
// entries) and every step of their walks over pickled values, and stop with
// an error as soon as a file would take more. A file built to make the
// reader use memory or time out of proportion to its size is refused
// instead.

#include <c10/util/Exception.h>

#include <cstdint>

namespace resnet::detail {

/// Memory a read may use besides the tensors it returns: this many times
/// the size of the file...
inline constexpr uint64_t kReadMemoryPerByte = 4;
/// ... plus this much.
inline constexpr uint64_t kReadMemoryFixed = uint64_t{64} << 20;
/// Steps the walks over a file's values may take: this many per byte of
/// the file, plus kReadStepsFixed.
inline constexpr uint64_t kReadStepsPerByte = 4;
inline constexpr uint64_t kReadStepsFixed = uint64_t{1} << 20;

/// The memory and steps left to the reading of one file.
class ReadBudget {
 public:
  /// The budget of a file of `file_bytes` bytes.
  /// The readers count what they allocate, not what the allocator and the
  /// mapped file's pages add to it: they stop at three quarters of the
  /// bound, which leaves the rest for those.
  explicit ReadBudget(uint64_t file_bytes = 0)
      : bytes_((kReadMemoryPerByte * file_bytes + kReadMemoryFixed) / 4 * 3),
        steps_(kReadStepsPerByte * file_bytes + kReadStepsFixed),
        bytes_total_(bytes_) {}

  /// Takes `bytes` of memory for `what`, or raises a `c10::Error`.
  void spend(uint64_t bytes, const char* what) {
    TORCH_CHECK(
        bytes <= bytes_,
        "reading it would take more than ",
        bytes_total_ >> 20,
        " MiB besides the tensors it holds (three quarters of ",
        kReadMemoryPerByte,
        " times its size plus ",
        kReadMemoryFixed >> 20,
        " MiB) for ",
        what,
        ": the file is built to exhaust memory, or damaged");
    bytes_ -= bytes;
  }

  /// Gives back memory taken by `spend` that has been freed.
  void refund(uint64_t bytes) {
    bytes_ = bytes_total_ - bytes_ >= bytes ? bytes_ + bytes : bytes_total_;
  }

  /// Takes `n` steps of a walk over the file's values for `what`, or raises
  /// a `c10::Error`.
  void step(const char* what, uint64_t n = 1) {
    TORCH_CHECK(
        n <= steps_,
        "reading it would take more steps than its size allows (",
        what,
        "): its values are shared or nested so that walking them never "
        "ends");
    steps_ -= n;
  }

  uint64_t bytes_left() const {
    return bytes_;
  }

 private:
  uint64_t bytes_;
  uint64_t steps_;
  uint64_t bytes_total_;
};

} // namespace resnet::detail
