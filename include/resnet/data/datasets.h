#pragma once

// Labelled image datasets held in memory as 8-bit pixels, as torch::data
// datasets: MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), the binary
// versions of CIFAR-10 and CIFAR-100, and folders of PNG and JPEG images by
// class (torchvision's ImageFolder), with a guess of which a folder holds.
// Needs zlib, libpng and libjpeg-turbo (through the readers). Not part of
// <resnet/resnet.h>.

#include <resnet/data/cifar_dataset.h>
#include <resnet/data/idx_dataset.h>
#include <resnet/data/image_dataset.h>
#include <resnet/data/image_folder.h>
#include <resnet/data/prepare.h>
#include <resnet/data/transforms.h>
#include <resnet/error.h>

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
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace resnet::data {

/// `data` with every image resized to `size` x `size` (the shorter side
/// bilinearly, antialiased, then the centre cropped, rounded back to 8
/// bits), a slice of images at a time: an in-memory dataset (IDX, CIFAR)
/// at the input size a network is to see.
inline ImageDataset resized(const ImageDataset& data, int64_t size) {
  TORCH_CHECK(
      size >= 1 && size <= 4096,
      "resnet: dataset '" + data.name() +
          "': images resize to 1 to 4096 pixels, not " + std::to_string(size));
  const auto& images = data.images();
  const int64_t n = images.size(0), slice = 512;
  auto out = torch::empty({n, images.size(1), size, size}, torch::kByte);
  for (int64_t i = 0; i < n; i += slice) {
    const auto part = images.slice(0, i, std::min(n, i + slice));
    out.slice(0, i, i + part.size(0))
        .copy_(center_crop(resize_shorter_side(part, size), size)
                   .round_()
                   .clamp_(0, 255));
  }
  return ImageDataset(out, data.targets(), data.classes(), data.name());
}

/// The kinds `open_dataset` reads: "fashion-mnist", "mnist", "kmnist",
/// "idx", "cifar10", "cifar100" and "folder".
inline const std::vector<std::string>& dataset_kinds() {
  static const std::vector<std::string> kinds = {
      "fashion-mnist",
      "mnist",
      "kmnist",
      "idx",
      "cifar10",
      "cifar100",
      "folder"};
  return kinds;
}

/// Whether a horizontal flip keeps an image of this kind in its class: not
/// for digits and characters (MNIST, KMNIST, other IDX files), where a
/// flipped image is another class or none.
inline bool flips_keep_class(const std::string& kind) {
  return kind != "mnist" && kind != "kmnist" && kind != "idx";
}

/// The dataset kind a folder holds and why.
struct DatasetGuess {
  /// One of `dataset_kinds()`.
  std::string kind;
  /// What in the folder gave it away, e.g. "CIFAR-100 binary files
  /// (train.bin)".
  std::string reason;
};

/// kind: "fashion-mnist", "mnist", "kmnist" or "idx" (MNIST-format IDX
/// files, told apart by the pixel statistics of the training images, not by
/// the folder's name), "cifar10", "cifar100", or "folder" (train/ and test/
/// or val/ sub-folders of class folders). Error listing what was expected
/// when none fits or `dir` is not a folder.
inline DatasetGuess guess_dataset(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TORCH_CHECK(
      fs::is_directory(dir, ec),
      "resnet: dataset folder '" + dir + "': no such folder");
  const auto idx =
      detail::find_file(dir, detail::idx_names(Split::Train, true));
  if (!idx.empty()) {
    const auto kind = idx_kind(read_idx(idx));
    for (const auto& r : detail::kIdxReferences) {
      if (kind == r.kind) {
        return {kind, std::string("IDX files, pixel statistics of ") + r.title};
      }
    }
    return {"idx", "IDX files, pixel statistics of no known dataset"};
  }
  if (!detail::find_file(
           detail::cifar_folder(dir, Cifar::Ten), {"data_batch_1.bin"})
           .empty()) {
    return {"cifar10", "CIFAR-10 binary batches (data_batch_1.bin)"};
  }
  if (!detail::find_file(
           detail::cifar_folder(dir, Cifar::Hundred), {"train.bin"})
           .empty()) {
    return {"cifar100", "CIFAR-100 binary files (train.bin)"};
  }
  const fs::path root(dir);
  if (fs::is_directory(root / "train", ec)) {
    for (const char* test : {"test", "val"}) {
      if (fs::is_directory(root / test, ec)) {
        return {
            "folder", std::string("image folders train/ and ") + test + "/"};
      }
    }
  }
  TORCH_CHECK(
      false,
      "resnet: cannot tell the format of dataset folder '" + dir +
          "': expected MNIST-format IDX files (train-images-idx3-ubyte[.gz] "
          "and the like), CIFAR-10 binary batches (data_batch_1.bin ...), "
          "CIFAR-100 binary files (train.bin, test.bin), either in a "
          "cifar-10-batches-bin/ or cifar-100-binary/ sub-folder or not, or "
          "image folders train/ and test/ (or val/) of one folder per class");
}

/// Both splits of a dataset folder.
struct TrainTest {
  /// The training split.
  ImageDataset train;
  /// The test split (a folder's val/ when it has no test/), with the
  /// training split's classes.
  ImageDataset test;
  /// The dataset kind, given or guessed: one of `dataset_kinds()`.
  std::string kind;
  /// Why `kind` was guessed; empty when it was given.
  std::string guess_reason;

  /// The first `train` training and `test` test examples (0: all).
  TrainTest head(int64_t train_count, int64_t test_count) const {
    return {train.head(train_count), test.head(test_count), kind, guess_reason};
  }

  /// "fashion-mnist: 60000 train, 10000 test, 1x28x28, 10 classes", and
  /// for a kind told from the files, why, on a second line.
  std::string describe() const {
    std::ostringstream o;
    o << kind << ": " << *train.size() << " train, " << *test.size()
      << " test, " << train.channels() << "x" << train.height() << "x"
      << train.width() << ", " << train.classes().size() << " classes";
    if (!guess_reason.empty()) {
      o << "\n  told from the files: " << guess_reason;
    }
    return o.str();
  }
};

/// Both splits of `dir`; kind "" guesses (guess_dataset). "folder":
/// dir/train and dir/test (or dir/val), the test split with the training
/// split's classes; `folder` applies to both (the size and channels of
/// train's first image when 0, so that both splits match). "idx": classes
/// "0" to the highest label of either split. The in-memory kinds (IDX,
/// CIFAR) are `resized` to `folder.size()` where it is given and differs.
inline TrainTest open_dataset(
    const std::string& dir,
    const std::string& kind = "",
    ImageFolderOptions folder = {}) {
  namespace fs = std::filesystem;
  const bool idx = kind == "fashion-mnist" || kind == "mnist" ||
      kind == "kmnist" || kind == "idx";
  TORCH_CHECK(
      kind.empty() || idx || kind == "cifar10" || kind == "cifar100" ||
          kind == "folder",
      "resnet: unknown dataset kind '" + kind +
          "' (expected fashion-mnist, mnist, kmnist, idx, cifar10, cifar100, "
          "folder, or \"\" to guess)");
  std::error_code ec;
  TORCH_CHECK(
      fs::is_directory(dir, ec),
      "resnet: dataset folder '" + dir + "': no such folder");
  TrainTest out;
  out.kind = kind;
  if (kind.empty()) {
    auto guess = guess_dataset(dir);
    out.kind = std::move(guess.kind);
    out.guess_reason = std::move(guess.reason);
  }
  const auto& k = out.kind;
  if (k == "cifar10" || k == "cifar100") {
    const auto c = k == "cifar10" ? Cifar::Ten : Cifar::Hundred;
    out.train = CifarDataset(dir, Split::Train, c);
    out.test = CifarDataset(dir, Split::Test, c);
  } else if (k == "folder") {
    const fs::path root(dir);
    const auto test = fs::is_directory(root / "test", ec) ? "test" : "val";
    TORCH_CHECK(
        fs::is_directory(root / "train", ec) &&
            fs::is_directory(root / test, ec),
        "resnet: dataset folder '" + dir +
            "': expected sub-folders train/ and test/ (or val/), each with one "
            "folder per class");
    out.train = ImageFolder((root / "train").string(), folder);
    folder.size(out.train.height()).channels(out.train.channels());
    out.test = ImageFolder((root / test).string(), out.train.classes(), folder);
  } else {
    out.train = IdxDataset(dir, Split::Train, k);
    out.test = IdxDataset(dir, Split::Test, k);
    if (k == "idx" && out.train.classes() != out.test.classes()) {
      // Classes "0" to the highest label of either split, for both.
      auto* fewer = out.train.classes().size() < out.test.classes().size()
          ? &out.train
          : &out.test;
      const auto& more = fewer == &out.train ? out.test : out.train;
      *fewer = ImageDataset(
          fewer->images(), fewer->targets(), more.classes(), "idx");
    }
  }
  if (k != "folder" && folder.size() > 0 &&
      folder.size() != out.train.height()) {
    out.train = resized(out.train, folder.size());
    out.test = resized(out.test, folder.size());
  }
  return out;
}

/// The per-channel mean and standard deviation of 8-bit images
/// [N, C, H, W], as fractions of 255: what `resnet::normalize` takes to give
/// the network inputs of mean 0 and standard deviation 1 (a standard
/// deviation of 0, a constant channel, is reported as 1).
inline std::pair<std::vector<double>, std::vector<double>> channel_statistics(
    const torch::Tensor& images) {
  TORCH_CHECK(
      images.defined() && images.dim() == 4 &&
          images.scalar_type() == torch::kByte && images.numel() > 0,
      "resnet: channel_statistics expects uint8 images [N, C, H, W], got " +
          detail::describe(images));
  // Exact integer sums of the pixels and their squares, a slice of images
  // at a time, so that no copy of the whole split is made.
  const int64_t n = images.size(0), slice = 1024;
  const double count = static_cast<double>(images.numel() / images.size(1));
  std::vector<double> mean, std;
  for (int64_t c = 0; c < images.size(1); ++c) {
    int64_t sum = 0, squares = 0;
    for (int64_t i = 0; i < n; i += slice) {
      const auto p = images.slice(0, i, std::min(n, i + slice))
                         .select(1, c)
                         .to(torch::kLong);
      sum += p.sum().item<int64_t>();
      squares += p.mul(p).sum().item<int64_t>();
    }
    const double m = static_cast<double>(sum) / count;
    const double var = static_cast<double>(squares) / count - m * m;
    const double s = std::sqrt(std::max(var, 0.0)) / 255;
    mean.push_back(m / 255);
    std.push_back(s > 0 ? s : 1.0);
  }
  return {mean, std};
}

/// How a training run on `data` prepares its batches: normalized with the
/// training split's channel_statistics, augmented with `augment` (none when
/// empty; no flips for kinds that flips_keep_class says a flip changes),
/// seeded by `seed`.
inline BatchPreparation batch_preparation(
    const TrainTest& data,
    std::optional<AugmentOptions> augment,
    uint64_t seed) {
  BatchPreparation p;
  std::tie(p.mean, p.std) = channel_statistics(data.train.images());
  p.classes = static_cast<int64_t>(data.train.classes().size());
  p.seed = seed;
  if (augment && !flips_keep_class(data.kind)) {
    augment->flip(0);
  }
  p.augment = augment;
  return p;
}

} // namespace resnet::data
