#pragma once

// Data-parallel training: the processes start from rank 0's weights and
// average their gradients in buckets while each backward pass runs
// (DataParallel; average_gradients after it), so that one optimizer step in
// each equals a step on the whole batch.

#include <resnet/config.h>
#include <resnet/error.h>
#include <resnet/train/distributed/detail/tensors.h>
#include <resnet/train/distributed/group.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/autograd.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace resnet::distributed {

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

 public:
  /// The policy for a model on `device`: on a GPU, buckets go out during
  /// backward; on the CPU, where each collective costs more than the
  /// overlap gains (measured in the README), in as few as possible after it.
  static DataParallelOptions for_device(const torch::Device& device) {
    DataParallelOptions options;
    if (!device.is_cuda()) {
      options.overlap(false).first_bucket_bytes(options.bucket_bytes());
    }
    return options;
  }
};

/// Averages the gradients of `module`'s parameters over the processes;
/// call it after backward() and before the optimizer step. The same
/// numbers as DataParallel::finish() (it is that code, with every bucket
/// sent after backward): a parameter without a gradient in this process
/// counts as a zero gradient and gets the average; one that no process has
/// a gradient for keeps none, as on one process, so that the optimizer
/// skips it in every process alike. Parameters that do not require a
/// gradient are left out.
inline void average_gradients(
    torch::nn::Module& module,
    Group& group,
    int64_t bucket_bytes = default_bucket_bytes);

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
  /// Broadcasts rank 0's parameters and buffers of `module`, opens a channel
  /// of `group` for the gradients and hooks the parameters that require
  /// them.
  explicit DataParallel(
      torch::nn::Module& module,
      Group& group,
      DataParallelOptions options = {})
      : DataParallel(module, group, options, false) {}

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

  /// `finish()`, then `optimizer.step()`: the call between a backward pass
  /// and the next.
  void step(torch::optim::Optimizer& optimizer) {
    finish();
    optimizer.step();
  }

  /// Sends what the backward pass has not sent, waits for every sum and
  /// replaces each gradient by its mean over the processes.
  void finish() {
    if (group_->size() == 1) {
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
    auto has_wait = group_->start_all_reduce_sum_(has);
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
    const auto n = static_cast<double>(group_->size());
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
  /// How many buckets the gradients are reduced in (0 with one process).
  size_t buckets() const {
    return buckets_.size();
  }

 private:
  friend void average_gradients(torch::nn::Module&, Group&, int64_t);

  // `after_backward`: for average_gradients, one finish() over the
  // gradients backward has already made: no broadcast, no hooks, the
  // buckets in the parameters' order.
  DataParallel(
      torch::nn::Module& module,
      Group& group,
      DataParallelOptions options,
      bool after_backward)
      : options_(options), rebuilt_(after_backward) {
    TORCH_CHECK(
        options.bucket_bytes() > 0 && options.first_bucket_bytes() > 0,
        "resnet: DataParallel expects positive bucket sizes, got ",
        options.bucket_bytes(),
        " and ",
        options.first_bucket_bytes());
    if (!after_backward) {
      broadcast_module(module, group);
      channel_.emplace(group.channel("gradients"));
    }
    group_ = channel_ ? &*channel_ : &group;
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
    if (after_backward) {
      return;
    }
    hooks_.reserve(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      hooks_.push_back(params_[i].register_hook(
          [this, i](const torch::Tensor& grad) { on_gradient(i, grad); }));
    }
  }

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
    group_->broadcast_({shared});
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
    buckets_[b].wait = group_->start_all_reduce_sum_(buckets_[b].flat);
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

  // A channel of the caller's group (the caller's own for
  // average_gradients).
  std::optional<Group> channel_;
  Group* group_ = nullptr;
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

inline void average_gradients(
    torch::nn::Module& module,
    Group& group,
    int64_t bucket_bytes) {
  if (group.size() == 1) {
    return;
  }
  const auto options = DataParallelOptions()
                           .overlap(false)
                           .bucket_bytes(bucket_bytes)
                           .first_bucket_bytes(bucket_bytes);
  DataParallel(module, group, options, true).finish();
}

} // namespace resnet::distributed
