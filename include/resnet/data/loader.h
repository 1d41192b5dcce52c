#pragma once

// Batches of an in-memory data set (uint8 images [N, C, H, W] and int64
// targets [N], such as a data set's images() and targets()), prepared ahead
// by worker threads and copied to the training device, with an order that
// depends only on the seed, the epoch and the batch size. Independent of any
// data set header. Not part of <resnet/resnet.h>.

#include <resnet/error.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

namespace resnet::data {

namespace detail {

/// splitmix64's finalizer (Steele, Lea and Flood 2014): a good 64-bit mix.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// `h` and `v` hashed together (order matters).
inline uint64_t hash_combine(uint64_t h, uint64_t v) {
  return splitmix64(h ^ splitmix64(v));
}

/// Uniform in [0, range) without modulo bias, the same with every standard
/// library (unlike std::uniform_int_distribution and std::shuffle).
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t range) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() -
      std::numeric_limits<uint64_t>::max() % range;
  uint64_t r = rng();
  while (r >= limit) {
    r = rng();
  }
  return r % range;
}

} // namespace detail

/// The order of examples in `epoch`: a permutation of [0, n) determined by
/// (seed, epoch) alone (Fisher-Yates with a std::mt19937_64 seeded by a hash
/// of both), as an int64 CPU tensor.
inline torch::Tensor epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  TORCH_CHECK(n >= 0, "resnet: epoch_order expects n >= 0, got ", n);
  auto order = torch::arange(n, torch::kLong);
  auto* p = order.data_ptr<int64_t>();
  std::mt19937_64 rng(detail::hash_combine(
      detail::splitmix64(seed ^ 0x6F72646572ull), // "order"
      static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(
        detail::uniform_below(rng, static_cast<uint64_t>(i + 1)));
    std::swap(p[i], p[j]);
  }
  return order;
}

/// A seed for batch `batch` of `epoch` in a run seeded `seed` (splitmix64
/// hashes of the three): augmentations seeded with it replay exactly on
/// resume, whatever the number of workers.
inline uint64_t batch_seed(uint64_t seed, int64_t epoch, int64_t batch) {
  return detail::hash_combine(
      detail::hash_combine(
          detail::splitmix64(seed ^ 0x6261746368ull), // "batch"
          static_cast<uint64_t>(epoch)),
      static_cast<uint64_t>(batch));
}

/// One batch of a `Loader`.
struct Batch {
  /// uint8 [B, C, H, W] on the loader's device (unless a transform changed
  /// the type).
  torch::Tensor images;
  /// int64 [B] on the loader's device.
  torch::Tensor targets;
  /// int64 [B] on the CPU: which examples.
  torch::Tensor indices;
  /// The epoch the batch belongs to.
  int64_t epoch = 0;
  /// The batch number within the epoch.
  int64_t index = 0;
};

/// Options of a `Loader`.
struct LoaderOptions {
  /// Examples per batch.
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Order each epoch by epoch_order(seed, epoch); otherwise 0..n-1.
  TORCH_ARG(bool, shuffle) = true;
  /// Drop the last, smaller batch of an epoch.
  TORCH_ARG(bool, drop_last) = false;
  /// Seed of the order (and, through batch_seed, of augmentations).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Threads preparing batches; 0: on the calling thread, in next().
  TORCH_ARG(int64_t, workers) = 1;
  /// Batches prepared ahead (a bounded queue), >= 1.
  TORCH_ARG(int64_t, prefetch) = 2;
  /// Where next() puts the batches.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Page-locked host batches when the device is CUDA.
  TORCH_ARG(bool, pin_memory) = true;
  /// This process's shard of every epoch ...
  TORCH_ARG(int64_t, rank) = 0;
  /// ... of this many: like torch's DistributedSampler (the order padded by
  /// wrapping around to a multiple of world_size; rank takes every
  /// world_size-th example from position rank), for distributed training.
  TORCH_ARG(int64_t, world_size) = 1;

 public:
  /// rank(part) and world_size(parts) at once: this process's shard.
  LoaderOptions& shard(int64_t part, int64_t parts) {
    return rank(part).world_size(parts);
  }
  /// Optional work on each CPU batch on a worker thread, before the copy to
  /// the device (e.g. CPU-side augmentation); gets the batch with epoch and
  /// index set, so it can seed from batch_seed.
  TORCH_ARG(std::function<void(Batch&)>, transform) = nullptr;
};

/// Batches of an in-memory data set, prepared ahead by worker threads: each
/// batch is gathered (copied row by row) into pinned memory when the device is
/// CUDA, then copied with non_blocking=true to the device by next() on the
/// caller's thread (and current stream). The batches of an epoch and their
/// order depend only on the options' seed, epoch and batch size (and the
/// shard), never on the number of workers or on timing: batch k is always
/// examples order[k*B, (k+1)*B). A worker's exception is rethrown by next()
/// for the batch it was preparing. One thread at a time calls the members.
///
///     Loader loader(images, targets, LoaderOptions().device(device));
///     for (int64_t epoch = 0; epoch < epochs; ++epoch) {
///       loader.start_epoch(epoch);
///       while (auto batch = loader.next()) {
///         auto x = batch->images.to(torch::kFloat).div_(255);
///         ...
///       }
///     }
class Loader {
 public:
  /// A dataset's images and targets: any with `images()` and `targets()`,
  /// such as the datasets of <resnet/data/datasets.h>.
  template <
      typename Dataset,
      typename = decltype(std::declval<const Dataset&>().images())>
  explicit Loader(const Dataset& dataset, LoaderOptions options = {})
      : Loader(dataset.images(), dataset.targets(), std::move(options)) {}

  /// `images` [N, C, H, W] uint8 or floating point and `targets` [N] int64,
  /// both in CPU memory, N >= 1; shared, not copied, unless not contiguous.
  Loader(
      torch::Tensor images,
      torch::Tensor targets,
      LoaderOptions options = {})
      : images_(std::move(images)),
        targets_(std::move(targets)),
        options_(std::move(options)) {
    TORCH_CHECK(
        images_.defined() && images_.dim() == 4 &&
            (images_.scalar_type() == torch::kByte ||
             images_.is_floating_point()),
        "resnet: Loader expects uint8 or floating-point images [N, C, H, W], "
        "got ",
        resnet::detail::describe(images_));
    TORCH_CHECK(
        images_.size(0) >= 1,
        "resnet: Loader expects at least one example, got images ",
        images_.sizes());
    TORCH_CHECK(
        targets_.defined() && targets_.dim() == 1 &&
            targets_.size(0) == images_.size(0) &&
            targets_.scalar_type() == torch::kLong,
        "resnet: Loader expects int64 targets [",
        images_.size(0),
        "] (one per image), got ",
        resnet::detail::describe(targets_));
    TORCH_CHECK(
        images_.is_cpu() && targets_.is_cpu(),
        "resnet: Loader expects images and targets in CPU memory, got ",
        images_.device(),
        " and ",
        targets_.device());
    TORCH_CHECK(
        options_.batch_size() >= 1,
        "resnet: Loader expects batch_size >= 1, got ",
        options_.batch_size());
    TORCH_CHECK(
        options_.workers() >= 0,
        "resnet: Loader expects workers >= 0, got ",
        options_.workers());
    TORCH_CHECK(
        options_.prefetch() >= 1,
        "resnet: Loader expects prefetch >= 1, got ",
        options_.prefetch());
    TORCH_CHECK(
        options_.world_size() >= 1 && options_.rank() >= 0 &&
            options_.rank() < options_.world_size(),
        "resnet: Loader expects 0 <= rank < world_size, got rank ",
        options_.rank(),
        " and world_size ",
        options_.world_size());
    const auto& device = options_.device();
    TORCH_CHECK(
        device.is_cpu() || (device.is_cuda() && torch::cuda::is_available()),
        "resnet: Loader expects a CPU device or an available CUDA device, "
        "got ",
        device,
        device.is_cuda() ? " (CUDA is not available)" : "");
    images_ = images_.contiguous();
    targets_ = targets_.contiguous();
    pin_ = device.is_cuda() && options_.pin_memory();
    const int64_t n = images_.size(0), world = options_.world_size();
    size_ = (n + world - 1) / world;
    batches_ = options_.drop_last()
        ? size_ / options_.batch_size()
        : (size_ + options_.batch_size() - 1) / options_.batch_size();
    threads_.reserve(static_cast<size_t>(options_.workers()));
    try {
      for (int64_t i = 0; i < options_.workers(); ++i) {
        threads_.emplace_back([this] { work(); });
      }
    } catch (...) {
      stop();
      throw;
    }
  }

  /// Stops and joins the workers (also mid-epoch).
  ~Loader() {
    stop();
  }

  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Examples in this rank's shard of an epoch (all of them for one rank).
  int64_t size() const {
    return size_;
  }

  /// Batches in an epoch, the last one smaller unless drop_last.
  int64_t batches_per_epoch() const {
    return batches_;
  }

  /// The options it was made with.
  const LoaderOptions& options() const {
    return options_;
  }

  /// Starts `epoch` at batch `first` (to resume mid-epoch); abandons any
  /// epoch in progress (batches being prepared for it are discarded).
  void start_epoch(int64_t epoch, int64_t first = 0) {
    TORCH_CHECK(
        epoch >= 0,
        "resnet: Loader::start_epoch expects epoch >= 0, got ",
        epoch);
    TORCH_CHECK(
        first >= 0 && first <= batches_,
        "resnet: Loader::start_epoch expects a first batch in [0, ",
        batches_,
        "], got ",
        first);
    auto order = shard(epoch);
    std::map<int64_t, Slot> abandoned;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++generation_;
      started_ = true;
      epoch_ = epoch;
      order_ = std::move(order);
      claimed_ = first;
      yielded_ = first;
      abandoned.swap(ready_);
    }
    work_ready_.notify_all();
  }

  /// The next batch of the epoch in order, or nullopt after the last one.
  std::optional<Batch> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    TORCH_CHECK(started_, "resnet: Loader::next() before start_epoch()");
    if (yielded_ >= batches_) {
      return std::nullopt;
    }
    Slot slot;
    if (threads_.empty()) {
      const int64_t k = yielded_++;
      const auto order = order_;
      const int64_t epoch = epoch_;
      lock.unlock();
      slot.batch = prepare(order, epoch, k);
    } else {
      const int64_t k = yielded_;
      batch_ready_.wait(lock, [&] { return ready_.count(k) != 0; });
      auto it = ready_.find(k);
      slot = std::move(it->second);
      ready_.erase(it);
      ++yielded_;
      lock.unlock();
      work_ready_.notify_all();
      if (slot.error) {
        std::rethrow_exception(slot.error);
      }
    }
    auto& b = slot.batch;
    const auto& device = options_.device();
    if (b.images.device() != device) {
      b.images = b.images.to(device, b.images.scalar_type(), true);
    }
    if (b.targets.device() != device) {
      b.targets = b.targets.to(device, b.targets.scalar_type(), true);
    }
    return std::move(slot.batch);
  }

 private:
  /// A prepared batch, or the exception that preparing it raised.
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  /// Stops and joins the workers.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_ready_.notify_all();
    for (auto& t : threads_) {
      t.join();
    }
    threads_.clear();
  }

  /// This rank's positions of the (padded) order of `epoch`.
  torch::Tensor shard(int64_t epoch) const {
    const int64_t n = images_.size(0), world = options_.world_size();
    auto order = options_.shuffle() ? epoch_order(n, options_.seed(), epoch)
                                    : torch::arange(n, torch::kLong);
    if (world == 1) {
      return order;
    }
    const auto positions =
        torch::arange(options_.rank(), size_ * world, world, torch::kLong)
            .remainder(n);
    return order.index_select(0, positions);
  }

  /// The rows `indices` of `source` (contiguous, in CPU memory), pinned
  /// for a CUDA device. Copied byte by byte rather than with index_select:
  /// an ATen kernel large enough to run in parallel would start an OpenMP
  /// team in each worker thread, whose threads then compete for the cores
  /// with the training's own (on 2 cores, the ResNet-20 trainer then ran
  /// slower than when it prepared batches on its own thread).
  torch::Tensor gather(
      const torch::Tensor& source,
      const torch::Tensor& indices) const {
    auto sizes = source.sizes().vec();
    sizes[0] = indices.numel();
    auto out = torch::empty(sizes, source.options().pinned_memory(pin_));
    const auto row = static_cast<size_t>(
        source.numel() / source.size(0) * source.element_size());
    const auto* from = static_cast<const char*>(source.data_ptr());
    auto* to = static_cast<char*>(out.data_ptr());
    const auto* index = indices.data_ptr<int64_t>();
    for (int64_t i = 0; i < indices.numel(); ++i) {
      std::memcpy(
          to + static_cast<size_t>(i) * row,
          from + static_cast<size_t>(index[i]) * row,
          row);
    }
    return out;
  }

  /// Batch k of `order` on the CPU, transformed.
  Batch prepare(const torch::Tensor& order, int64_t epoch, int64_t k) const {
    const int64_t b = options_.batch_size();
    const int64_t start = k * b;
    const int64_t count = std::min(b, size_ - start);
    Batch batch;
    batch.epoch = epoch;
    batch.index = k;
    batch.indices = order.slice(0, start, start + count).clone();
    batch.images = gather(images_, batch.indices);
    batch.targets = gather(targets_, batch.indices);
    if (options_.transform()) {
      options_.transform()(batch);
      if (pin_) {
        if (batch.images.is_cpu() && !batch.images.is_pinned()) {
          batch.images = batch.images.pin_memory();
        }
        if (batch.targets.is_cpu() && !batch.targets.is_pinned()) {
          batch.targets = batch.targets.pin_memory();
        }
      }
    }
    return batch;
  }

  /// A worker: claims the next batch while fewer than `prefetch` are
  /// outstanding, prepares it unlocked, files it under its number unless
  /// the epoch was abandoned meanwhile.
  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      work_ready_.wait(lock, [&] {
        return stop_ ||
            (started_ && claimed_ < batches_ &&
             claimed_ - yielded_ < options_.prefetch());
      });
      if (stop_) {
        return;
      }
      const int64_t k = claimed_++;
      const uint64_t generation = generation_;
      const auto order = order_;
      const int64_t epoch = epoch_;
      lock.unlock();
      Slot slot;
      try {
        slot.batch = prepare(order, epoch, k);
      } catch (...) {
        slot.error = std::current_exception();
      }
      lock.lock();
      if (generation == generation_ && !stop_) {
        ready_.emplace(k, std::move(slot));
        batch_ready_.notify_all();
      } else {
        // Free the abandoned batch outside the lock.
        lock.unlock();
        slot = Slot{};
        lock.lock();
      }
    }
  }

  torch::Tensor images_;
  torch::Tensor targets_;
  LoaderOptions options_;
  bool pin_ = false;
  int64_t size_ = 0;
  int64_t batches_ = 0;

  std::mutex mutex_;
  /// Workers wait here for a batch to claim (or to stop).
  std::condition_variable work_ready_;
  /// next() waits here for the batch it yields next.
  std::condition_variable batch_ready_;
  bool stop_ = false;
  bool started_ = false;
  /// Bumped by start_epoch; batches of an older generation are dropped.
  uint64_t generation_ = 0;
  int64_t epoch_ = 0;
  torch::Tensor order_;
  /// Batches [yielded_, claimed_) are being prepared or ready.
  int64_t claimed_ = 0;
  int64_t yielded_ = 0;
  std::map<int64_t, Slot> ready_;
  std::vector<std::thread> threads_;
};

} // namespace resnet::data
