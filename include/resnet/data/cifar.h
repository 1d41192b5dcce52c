#pragma once

// CIFAR-10 and CIFAR-100 in their binary versions: fixed-size records of
// label bytes and 3x32x32 pixels (red, green, then blue planes). Gzipped or
// not. Needs zlib (Debian: zlib1g-dev). Not part of <resnet/resnet.h>.

#include <resnet/data/gzip.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace resnet::data {

/// Which CIFAR a binary file holds; it sets the record layout.
enum class Cifar {
  Ten, ///< 1 label byte per record, 10 classes
  Hundred, ///< a coarse (20 classes) then a fine (100 classes) label byte
};

/// Images [N, 3, 32, 32] uint8 and their classes [N] int64.
struct LabelledImages {
  /// [N, 3, 32, 32] uint8 images, channels RGB.
  torch::Tensor images;
  /// [N] int64 class indices (CIFAR-100: the fine labels).
  torch::Tensor targets;
};

/// Bytes per record of the binary version of `kind`.
inline size_t cifar_record_bytes(Cifar kind) {
  return (kind == Cifar::Ten ? 1 : 2) + 3 * 32 * 32;
}

/// Decodes CIFAR records. The targets are CIFAR-10's labels or CIFAR-100's
/// fine labels. Raises a `c10::Error` naming `what` when the size is not a
/// whole number of records or a label is out of range.
inline LabelledImages decode_cifar(
    const uint8_t* data,
    size_t size,
    Cifar kind,
    const std::string& what = "CIFAR data") {
  const size_t record = cifar_record_bytes(kind);
  const size_t labels = record - 3 * 32 * 32;
  const char* name = kind == Cifar::Ten ? "CIFAR-10" : "CIFAR-100";
  TORCH_CHECK(
      size > 0 && size % record == 0,
      "resnet: '",
      what,
      "': expected ",
      name,
      " binary records of ",
      record,
      " bytes, found ",
      size,
      " bytes");
  const auto n = static_cast<int64_t>(size / record);
  const auto all = torch::from_blob(
      const_cast<uint8_t*>(data),
      {n, static_cast<int64_t>(record)},
      torch::kByte);
  const auto target = all.select(1, static_cast<int64_t>(labels - 1));
  const int64_t classes = kind == Cifar::Ten ? 10 : 100;
  const int64_t highest = target.max().item<int64_t>();
  TORCH_CHECK(
      highest < classes,
      "resnet: '",
      what,
      "': label ",
      highest,
      " in a ",
      name,
      " file (",
      classes,
      " classes); is this the other CIFAR?");
  if (kind == Cifar::Hundred) {
    const int64_t coarse = all.select(1, 0).max().item<int64_t>();
    TORCH_CHECK(
        coarse < 20,
        "resnet: '",
        what,
        "': coarse label ",
        coarse,
        " in a CIFAR-100 file (20 superclasses)");
  }
  return {
      all.slice(1, static_cast<int64_t>(labels))
          .reshape({n, 3, 32, 32})
          .clone(),
      target.to(torch::kLong)};
}

/// The records of `files` (each gzipped or not), in order.
inline LabelledImages read_cifar(
    const std::vector<std::string>& files,
    Cifar kind) {
  TORCH_CHECK(!files.empty(), "resnet: read_cifar needs at least one file");
  std::vector<torch::Tensor> images, targets;
  for (const auto& f : files) {
    const auto bytes = read_maybe_gzip(f);
    auto part = decode_cifar(bytes.data(), bytes.size(), kind, f);
    images.push_back(std::move(part.images));
    targets.push_back(std::move(part.targets));
  }
  return {torch::cat(images), torch::cat(targets)};
}

} // namespace resnet::data
