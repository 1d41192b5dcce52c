#pragma once

// The binary versions of CIFAR-10 and CIFAR-100 as datasets.

#include <resnet/data/cifar.h>
#include <resnet/data/image_dataset.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace resnet::data {

namespace detail {

// The folder holding a CIFAR binary version: `dir` itself or its
// cifar-10-batches-bin/ (cifar-100-binary/) sub-folder.
inline fs::path cifar_folder(const fs::path& dir, Cifar kind) {
  const auto sub =
      dir / (kind == Cifar::Ten ? "cifar-10-batches-bin" : "cifar-100-binary");
  std::error_code ec;
  return fs::is_directory(sub, ec) ? sub : dir;
}

// Class names from a text file of one name a line, when present.
inline std::vector<std::string> cifar_classes(const fs::path& dir, Cifar kind) {
  const bool ten = kind == Cifar::Ten;
  const auto file =
      find_file(dir, {ten ? "batches.meta.txt" : "fine_label_names.txt"});
  if (file.empty()) {
    return class_names(ten ? "cifar10" : "cifar100");
  }
  const auto bytes = read_maybe_gzip(file);
  std::stringstream in(std::string(bytes.begin(), bytes.end()));
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    const auto end = line.find_last_not_of(" \t\r");
    if (end != std::string::npos) {
      names.push_back(line.substr(0, end + 1));
    }
  }
  TORCH_CHECK(
      names.size() == (ten ? 10u : 100u),
      "resnet: '" + file + "': expected " + (ten ? "10" : "100") +
          " class names, one a line, got " + std::to_string(names.size()));
  return names;
}

inline ImageDataset open_cifar(const fs::path& root, Split split, Cifar kind) {
  const auto dir = cifar_folder(root, kind);
  const bool ten = kind == Cifar::Ten;
  std::vector<std::string> files;
  if (ten && split == Split::Train) {
    for (int i = 1; i <= 5; ++i) {
      auto f = find_file(dir, {"data_batch_" + std::to_string(i) + ".bin"});
      if (!f.empty()) {
        files.push_back(std::move(f));
      }
    }
    TORCH_CHECK(
        !files.empty(),
        "resnet: expected data_batch_1.bin ... data_batch_5.bin[.gz] in '" +
            dir.string() + "', found none");
  } else {
    const bool train = split == Split::Train;
    const auto name = ten ? "test_batch.bin" : train ? "train.bin" : "test.bin";
    files.push_back(require_file(dir, {name}));
  }
  auto data = read_cifar(files, kind);
  return ImageDataset(
      std::move(data.images),
      std::move(data.targets),
      cifar_classes(dir, kind),
      ten ? "cifar10" : "cifar100");
}

} // namespace detail

/// The binary versions of CIFAR-10 and CIFAR-100.
class CifarDataset : public ImageDataset {
 public:
  /// `dir` is the binary version as extracted, or its parent: CIFAR-10
  /// cifar-10-batches-bin/data_batch_1..5.bin (those present) and
  /// test_batch.bin; CIFAR-100 cifar-100-binary/train.bin and test.bin (fine
  /// labels). Each file gzipped or not. Class names from batches.meta.txt
  /// (fine_label_names.txt) when present, else class_names().
  CifarDataset(const std::string& dir, Split split, Cifar kind = Cifar::Ten)
      : ImageDataset(detail::open_cifar(dir, split, kind)) {}
};

} // namespace resnet::data
