#pragma once

// The tensors a collective moves: gradients grouped in buckets of about
// a given size, flattened into one buffer and back.

#include <c10/util/Exception.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <vector>

namespace resnet::distributed {

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

} // namespace resnet::distributed
