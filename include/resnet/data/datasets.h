#pragma once

// Labelled image datasets held in memory as 8-bit pixels, as torch::data
// datasets: MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), the binary
// versions of CIFAR-10 and CIFAR-100, and folders of PNG and JPEG images by
// class (torchvision's ImageFolder), with a guess of which a folder holds.
// Needs zlib, libpng and libjpeg-turbo (through the readers). Not part of
// <resnet/resnet.h>.

#include <resnet/data/cifar.h>
#include <resnet/data/idx.h>
#include <resnet/detail/describe.h>
#include <resnet/image.h>
#include <resnet/transforms.h>

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

/// Which part of a dataset to read.
enum class Split { Train, Test };

namespace detail {

namespace fs = std::filesystem;

// "a,b,c" -> {"a", "b", "c"}.
inline std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');) {
    out.push_back(name);
  }
  return out;
}

using resnet::detail::describe;

// Every target in [0, classes).
inline void check_targets(
    const torch::Tensor& targets,
    size_t classes,
    const std::string& what) {
  if (targets.numel() == 0) {
    return;
  }
  const auto low = targets.min().item<int64_t>();
  const auto high = targets.max().item<int64_t>();
  TORCH_CHECK(
      low >= 0 && high < static_cast<int64_t>(classes),
      "resnet: " + what + ": expected labels in [0, " +
          std::to_string(classes) + "), got " +
          std::to_string(low < 0 ? low : high));
}

} // namespace detail

/// Labelled images held in memory as 8-bit pixels; a torch::data dataset.
class ImageDataset : public torch::data::datasets::Dataset<ImageDataset> {
 public:
  ImageDataset() = default;

  /// Checks: images uint8 4-D [N, C, H, W] (made contiguous), targets 1-D
  /// integer with N entries (stored int64), every target in
  /// [0, classes.size()), classes non-empty. Errors name `name`.
  ImageDataset(
      torch::Tensor images,
      torch::Tensor targets,
      std::vector<std::string> classes,
      std::string name)
      : classes_(std::move(classes)), name_(std::move(name)) {
    const auto where = "dataset '" + name_ + "'";
    TORCH_CHECK(
        images.defined() && images.dim() == 4 &&
            images.scalar_type() == torch::kByte,
        "resnet: " + where + ": expected images uint8 [N, C, H, W], got " +
            detail::describe(images));
    TORCH_CHECK(
        targets.defined() && targets.dim() == 1 &&
            c10::isIntegralType(targets.scalar_type(), false) &&
            targets.size(0) == images.size(0),
        "resnet: " + where + ": expected integer targets [" +
            std::to_string(images.size(0)) + "], got " +
            detail::describe(targets));
    TORCH_CHECK(
        !classes_.empty(),
        "resnet: " + where + ": expected at least one class name, got none");
    images_ = images.contiguous();
    targets_ = targets.to(torch::kLong).contiguous();
    detail::check_targets(targets_, classes_.size(), where);
  }

  /// {image uint8 [C, H, W], target int64 0-dim}.
  torch::data::Example<> get(size_t index) override {
    TORCH_CHECK(
        index < size().value(),
        "resnet: dataset '" + name_ + "': index " + std::to_string(index) +
            " out of range for " + std::to_string(size().value()) +
            " examples");
    const auto i = static_cast<int64_t>(index);
    return {images_[i], targets_[i]};
  }

  torch::optional<size_t> size() const override {
    return images_.defined() ? static_cast<size_t>(images_.size(0)) : 0;
  }

  /// [N, C, H, W] uint8.
  const torch::Tensor& images() const {
    return images_;
  }
  /// [N] int64.
  const torch::Tensor& targets() const {
    return targets_;
  }
  const std::vector<std::string>& classes() const {
    return classes_;
  }
  /// The kind: "fashion-mnist", "mnist", "kmnist", "idx", "cifar10",
  /// "cifar100" or "folder" (or the name given).
  const std::string& name() const {
    return name_;
  }
  int64_t channels() const {
    return images_.defined() ? images_.size(1) : 0;
  }
  int64_t height() const {
    return images_.defined() ? images_.size(2) : 0;
  }
  int64_t width() const {
    return images_.defined() ? images_.size(3) : 0;
  }

  /// The first n examples (all of them when n <= 0 or n >= size).
  ImageDataset head(int64_t n) const {
    if (n <= 0 || n >= static_cast<int64_t>(size().value())) {
      return *this;
    }
    return ImageDataset(
        images_.slice(0, 0, n), targets_.slice(0, 0, n), classes_, name_);
  }

  /// Part `part` of `parts` nearly equal consecutive parts (sizes differ by
  /// at most one), e.g. each process's share of an evaluation; together the
  /// parts hold every example once.
  ImageDataset shard(int64_t part, int64_t parts) const {
    TORCH_CHECK(
        parts >= 1 && part >= 0 && part < parts,
        "resnet: ImageDataset::shard expects 0 <= part < parts, got part ",
        part,
        " of ",
        parts);
    const int64_t n = static_cast<int64_t>(size().value());
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    return ImageDataset(
        images_.slice(0, begin, end),
        targets_.slice(0, begin, end),
        classes_,
        name_);
  }

 private:
  torch::Tensor images_;
  torch::Tensor targets_;
  std::vector<std::string> classes_;
  std::string name_;
};

/// The class names of a known kind: "fashion-mnist", "mnist", "kmnist",
/// "cifar10", "cifar100" (fine labels, the official order). Error for
/// another name.
inline const std::vector<std::string>& class_names(const std::string& kind) {
  static const std::map<std::string, std::vector<std::string>> names = {
      {"fashion-mnist",
       detail::split_names(
           "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,"
           "Ankle boot")},
      {"mnist", detail::split_names("0,1,2,3,4,5,6,7,8,9")},
      {"kmnist", detail::split_names("o,ki,su,tsu,na,ha,ma,ya,re,wo")},
      {"cifar10",
       detail::split_names(
           "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck")},
      {"cifar100",
       detail::split_names(
           "apple,aquarium_fish,baby,bear,beaver,bed,bee,beetle,bicycle,"
           "bottle,bowl,boy,bridge,bus,butterfly,camel,can,castle,"
           "caterpillar,cattle,chair,chimpanzee,clock,cloud,cockroach,couch,"
           "crab,crocodile,cup,dinosaur,dolphin,elephant,flatfish,forest,fox,"
           "girl,hamster,house,kangaroo,keyboard,lamp,lawn_mower,leopard,"
           "lion,lizard,lobster,man,maple_tree,motorcycle,mountain,mouse,"
           "mushroom,oak_tree,orange,orchid,otter,palm_tree,pear,"
           "pickup_truck,pine_tree,plain,plate,poppy,porcupine,possum,"
           "rabbit,raccoon,ray,road,rocket,rose,sea,seal,shark,shrew,skunk,"
           "skyscraper,snail,snake,spider,squirrel,streetcar,sunflower,"
           "sweet_pepper,table,tank,telephone,television,tiger,tractor,train,"
           "trout,tulip,turtle,wardrobe,whale,willow_tree,wolf,woman,worm")},
  };
  const auto it = names.find(kind);
  TORCH_CHECK(
      it != names.end(),
      "resnet: no class names for '" + kind +
          "' (expected fashion-mnist, mnist, kmnist, cifar10 or cifar100)");
  return it->second;
}

namespace detail {

// The published statistics of a training set of 28x28 images (mean and
// standard deviation of the pixels, in [0, 1]), with windows wide enough for
// the test sets and for a sample of a few thousand images, narrow enough to
// keep the others (and EMNIST, mean 0.172 to 0.175) out; and the fraction of
// zero pixels (MNIST 0.81, Fashion-MNIST 0.50; a wide window for KMNIST).
struct IdxReference {
  const char *kind, *title;
  double mean, mean_tolerance, deviation, zeros_low, zeros_high;
};

inline constexpr IdxReference kIdxReferences[] = {
    {"mnist", "MNIST", 0.1307, 0.015, 0.3081, 0.75, 0.87},
    {"kmnist", "KMNIST", 0.1918, 0.012, 0.3483, 0.45, 0.90},
    {"fashion-mnist", "Fashion-MNIST", 0.2860, 0.020, 0.3530, 0.44, 0.56},
};
inline constexpr double kIdxStdTolerance = 0.015;
inline constexpr int64_t kIdxMinImages = 1000;
inline constexpr int64_t kIdxSampleImages = 4096;

} // namespace detail

/// What the pixel statistics of IDX images [N, 1, H, W] or [N, H, W] uint8
/// say they are: "fashion-mnist", "mnist", "kmnist", or "" when unsure
/// (anything but 28x28 pixels, fewer than 1000 images, or statistics outside
/// every known set's). Looks at up to 4096 images spread over the set.
inline std::string idx_kind(const torch::Tensor& images) {
  if (!images.defined() || images.scalar_type() != torch::kByte ||
      !(images.dim() == 3 || (images.dim() == 4 && images.size(1) == 1)) ||
      images.size(-1) != 28 || images.size(-2) != 28 ||
      images.size(0) < detail::kIdxMinImages) {
    return "";
  }
  const int64_t n = images.size(0);
  const int64_t step = std::max<int64_t>(1, n / detail::kIdxSampleImages);
  const auto sample = images.slice(0, 0, n, step)
                          .slice(0, 0, detail::kIdxSampleImages)
                          .to(torch::kFloat)
                          .div_(255);
  const auto count = static_cast<double>(sample.numel());
  const double mean = sample.sum(torch::kDouble).item<double>() / count;
  const double square = sample.square().sum(torch::kDouble).item<double>();
  const double deviation =
      std::sqrt(std::max(0.0, square / count - mean * mean));
  const double zeros = sample.eq(0).sum().item<double>() / count;
  for (const auto& r : detail::kIdxReferences) {
    if (std::abs(mean - r.mean) <= r.mean_tolerance &&
        std::abs(deviation - r.deviation) <= detail::kIdxStdTolerance &&
        zeros >= r.zeros_low && zeros <= r.zeros_high) {
      return r.kind;
    }
  }
  return "";
}

namespace detail {

// The first of `names` in `dir`, each as named or with .gz; "" if none.
inline std::string find_file(
    const fs::path& dir,
    const std::vector<std::string>& names) {
  for (const auto& name : names) {
    for (const char* suffix : {"", ".gz"}) {
      std::error_code ec;
      const auto path = dir / (name + suffix);
      if (fs::is_regular_file(path, ec)) {
        return path.string();
      }
    }
  }
  return "";
}

inline std::string require_file(
    const fs::path& dir,
    const std::vector<std::string>& names) {
  const auto path = find_file(dir, names);
  std::string expected;
  for (const auto& name : names) {
    expected += (expected.empty() ? "" : " or ") + name + "[.gz]";
  }
  TORCH_CHECK(
      !path.empty(),
      "resnet: expected " + expected + " in '" + dir.string() +
          "', found none");
  return path;
}

// The IDX file names of a split: images (rank 3) or labels (rank 1), in
// both spellings.
inline std::vector<std::string> idx_names(Split split, bool images) {
  const std::string base =
      std::string(split == Split::Train ? "train" : "t10k") +
      (images ? "-images" : "-labels");
  const std::string type = images ? "idx3-ubyte" : "idx1-ubyte";
  return {base + "-" + type, base + "." + type};
}

// Images [N, 1, H, W] and labels [N] int64 from a pair of IDX files.
inline LabelledImages read_idx_pair(
    const std::string& images_file,
    const std::string& labels_file) {
  auto images = read_idx(images_file);
  TORCH_CHECK(
      images.dim() == 3 && images.scalar_type() == torch::kByte,
      "resnet: '" + images_file + "': expected 8-bit images [N, H, W], got " +
          describe(images));
  auto labels = read_idx(labels_file);
  TORCH_CHECK(
      labels.dim() == 1 && c10::isIntegralType(labels.scalar_type(), false) &&
          labels.size(0) == images.size(0),
      "resnet: '" + labels_file + "': expected " +
          std::to_string(images.size(0)) + " integer labels to match '" +
          images_file + "', got " + describe(labels));
  return {images.unsqueeze(1), labels.to(torch::kLong)};
}

inline ImageDataset labelled(
    LabelledImages data,
    std::vector<std::string> classes,
    std::string name,
    const std::string& source) {
  check_targets(data.targets, classes.size(), "'" + source + "'");
  return ImageDataset(
      std::move(data.images),
      std::move(data.targets),
      std::move(classes),
      std::move(name));
}

inline ImageDataset
open_idx(const std::string& dir, Split split, std::string kind) {
  TORCH_CHECK(
      kind.empty() || kind == "mnist" || kind == "fashion-mnist" ||
          kind == "kmnist" || kind == "idx",
      "resnet: unknown IDX dataset kind '" + kind +
          "' (expected mnist, fashion-mnist, kmnist, idx, or \"\" to guess)");
  const auto images_file = require_file(dir, idx_names(split, true));
  const auto labels_file = require_file(dir, idx_names(split, false));
  auto data = read_idx_pair(images_file, labels_file);
  if (kind.empty()) {
    kind = idx_kind(data.images);
    kind = kind.empty() ? "idx" : kind;
  }
  std::vector<std::string> classes;
  if (kind == "idx") {
    const int64_t high =
        data.targets.numel() > 0 ? data.targets.max().item<int64_t>() : 0;
    for (int64_t c = 0; c <= high; ++c) {
      classes.push_back(std::to_string(c));
    }
  } else {
    classes = class_names(kind);
  }
  return labelled(std::move(data), std::move(classes), kind, labels_file);
}

} // namespace detail

/// MNIST-format IDX files: MNIST, Fashion-MNIST, KMNIST and the like.
class IdxDataset : public ImageDataset {
 public:
  /// `dir` holds MNIST-layout IDX files: train-images-idx3-ubyte,
  /// train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
  /// t10k-labels-idx1-ubyte (also spelt train-images.idx3-ubyte), each
  /// optionally .gz. `kind` names the classes: "mnist", "fashion-mnist",
  /// "kmnist", "idx" (classes "0" to the highest label) or "" to tell from
  /// the images (idx_kind, falling back to "idx").
  IdxDataset(const std::string& dir, Split split, const std::string& kind = "")
      : ImageDataset(detail::open_idx(dir, split, kind)) {}

  /// Explicit files.
  IdxDataset(
      const std::string& images_file,
      const std::string& labels_file,
      std::vector<std::string> classes,
      std::string name)
      : ImageDataset(detail::labelled(
            detail::read_idx_pair(images_file, labels_file),
            std::move(classes),
            std::move(name),
            labels_file)) {}
};

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

/// How ImageFolder decodes its images.
struct ImageFolderOptions {
  /// Side of the square images: each is resized (shorter side) and
  /// centre-cropped to size x size; 0: the shorter side of the first image
  /// (sorted order).
  TORCH_ARG(int64_t, size) = 0;
  /// 1 or 3; 0: 3 when the first image has 3 or more channels, else 1.
  TORCH_ARG(int64_t, channels) = 0;
  /// Decoding threads; 0: std::thread::hardware_concurrency().
  TORCH_ARG(int64_t, threads) = 0;
};

namespace detail {

// torchvision's IMG_EXTENSIONS.
inline const std::vector<std::string> kImageExtensions =
    split_names(".png,.jpg,.jpeg,.bmp,.ppm,.pgm,.tif,.tiff,.webp");

inline bool ends_with_any(
    const std::string& name,
    const std::vector<std::string>& suffixes) {
  for (const auto& s : suffixes) {
    if (name.size() >= s.size() &&
        name.compare(name.size() - s.size(), s.size(), s) == 0) {
      return true;
    }
  }
  return false;
}

// The image files under `dir` (following symlinks) in torchvision's order:
// folders in sorted path order, the files of each in sorted name order.
inline std::vector<std::string> image_files(const fs::path& dir) {
  std::map<std::string, std::vector<std::string>> folders;
  try {
    const auto follow = fs::directory_options::follow_directory_symlink;
    for (const auto& e : fs::recursive_directory_iterator(dir, follow)) {
      auto name = e.path().filename().string();
      for (auto& c : name) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      if (!e.is_regular_file() || !ends_with_any(name, kImageExtensions)) {
        continue;
      }
      TORCH_CHECK(
          ends_with_any(name, {".png", ".jpg", ".jpeg"}),
          "resnet: '" + e.path().string() +
              "': only PNG and JPEG are read (convert the image first)");
      folders[e.path().parent_path().string()].push_back(
          e.path().filename().string());
    }
  } catch (const fs::filesystem_error& e) {
    TORCH_CHECK(
        false, "resnet: cannot list '" + dir.string() + "': " + e.what());
  }
  std::vector<std::string> out;
  for (auto& [folder, names] : folders) {
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      out.push_back((fs::path(folder) / name).string());
    }
  }
  return out;
}

// Decodes `files` into [N, channels, size, size] uint8, on `threads`
// threads; the error of the first file that fails, if any.
inline torch::Tensor decode_images(
    const std::vector<std::string>& files,
    int64_t channels,
    int64_t size,
    int64_t threads) {
  const auto n = static_cast<int64_t>(files.size());
  auto out = torch::empty({n, channels, size, size}, torch::kByte);
  std::vector<std::exception_ptr> errors(files.size());
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  const auto work = [&] {
    for (int64_t i = 0; !failed && (i = next++) < n;) {
      try {
        const auto at = static_cast<size_t>(i);
        auto image = read_image(files[at], static_cast<int>(channels));
        if (image.size(1) != size || image.size(2) != size) {
          image = center_crop(resize_shorter_side(image, size), size)
                      .round()
                      .clamp(0, 255)
                      .to(torch::kByte);
        }
        out[i].copy_(image);
      } catch (...) {
        errors[static_cast<size_t>(i)] = std::current_exception();
        failed = true;
      }
    }
  };
  if (threads == 0) {
    threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < std::min(threads, n); ++t) {
    pool.emplace_back(work);
  }
  work();
  for (auto& t : pool) {
    t.join();
  }
  for (const auto& e : errors) {
    if (e) {
      std::rethrow_exception(e);
    }
  }
  return out;
}

inline ImageDataset open_folder(
    const fs::path& root,
    std::vector<std::string> classes,
    bool find_classes,
    ImageFolderOptions options) {
  const auto where = "resnet: image folder '" + root.string() + "': ";
  const auto c = options.channels();
  TORCH_CHECK(
      options.size() >= 0 && options.threads() >= 0 &&
          (c == 0 || c == 1 || c == 3),
      where +
          "expected size >= 0, channels 0, 1 or 3, and threads >= 0, "
          "got " +
          std::to_string(options.size()) + ", " + std::to_string(c) + " and " +
          std::to_string(options.threads()));
  std::error_code ec;
  TORCH_CHECK(fs::is_directory(root, ec), where + "no such folder");
  if (find_classes) {
    for (const auto& e : fs::directory_iterator(root)) {
      if (e.is_directory()) {
        classes.push_back(e.path().filename().string());
      }
    }
    std::sort(classes.begin(), classes.end());
  }
  TORCH_CHECK(
      !classes.empty(), where + "expected one folder per class, found none");
  std::vector<std::string> files;
  std::vector<int64_t> targets;
  std::string empty;
  for (size_t i = 0; i < classes.size(); ++i) {
    TORCH_CHECK(
        fs::is_directory(root / classes[i], ec),
        where + "expected a folder for class '" + classes[i] + "'");
    const auto found = image_files(root / classes[i]);
    files.insert(files.end(), found.begin(), found.end());
    targets.insert(targets.end(), found.size(), static_cast<int64_t>(i));
    if (found.empty()) {
      empty += (empty.empty() ? "'" : ", '") + classes[i] + "'";
    }
  }
  TORCH_CHECK(
      empty.empty(),
      where +
          "expected PNG or JPEG images (.png, .jpg, .jpeg) for every "
          "class, found none for " +
          empty);
  if (options.size() == 0 || options.channels() == 0) {
    const auto first = read_image(files.front(), 0);
    if (options.channels() == 0) {
      options.channels(first.size(0) >= 3 ? 3 : 1);
    }
    if (options.size() == 0) {
      options.size(std::min(first.size(1), first.size(2)));
    }
  }
  return ImageDataset(
      decode_images(
          files, options.channels(), options.size(), options.threads()),
      torch::tensor(targets, torch::kLong),
      std::move(classes),
      "folder");
}

} // namespace detail

/// Folders of PNG and JPEG images by class, as torchvision's ImageFolder.
class ImageFolder : public ImageDataset {
 public:
  /// torchvision's ImageFolder rules: classes are the sorted names of
  /// root's sub-folders; each class folder is walked recursively (following
  /// symlinks), files taken in sorted path order, those with an image
  /// extension (case-insensitive) kept, others skipped. PNG and JPEG decode;
  /// another image extension (.bmp .ppm .pgm .tif .tiff .webp) is an error
  /// naming the file. A class with no image is an error.
  explicit ImageFolder(const std::string& root, ImageFolderOptions options = {})
      : ImageDataset(detail::open_folder(root, {}, true, options)) {}

  /// With a given class list (e.g. the training split's, so that a test
  /// split's indices match); a class folder missing here is an error.
  ImageFolder(
      const std::string& root,
      std::vector<std::string> classes,
      ImageFolderOptions options = {})
      : ImageDataset(
            detail::open_folder(root, std::move(classes), false, options)) {}
};

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
  std::string kind;
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
  ImageDataset train;
  ImageDataset test;
  std::string kind;
  /// Why `kind` was guessed; empty when it was given.
  std::string guess_reason;

  /// "fashion-mnist: 60000 train, 10000 test, 1x28x28, 10 classes".
  std::string describe() const {
    std::ostringstream o;
    o << kind << ": " << *train.size() << " train, " << *test.size()
      << " test, " << train.channels() << "x" << train.height() << "x"
      << train.width() << ", " << train.classes().size() << " classes";
    return o.str();
  }
};

/// Both splits of `dir`; kind "" guesses (guess_dataset). "folder":
/// dir/train and dir/test (or dir/val), the test split with the training
/// split's classes; `folder` applies to both (the size and channels of
/// train's first image when 0, so that both splits match). "idx": classes
/// "0" to the highest label of either split.
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

} // namespace resnet::data
