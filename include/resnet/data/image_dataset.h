#pragma once

// A labelled image dataset held in memory as 8-bit pixels, as a torch::data
// dataset (`ImageDataset`), the class names of the known datasets, and the
// file lookup the dataset readers share.

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

  /// The number of examples N (0 for a default-constructed dataset).
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
  /// The class names; target i is the class `classes()[i]`.
  const std::vector<std::string>& classes() const {
    return classes_;
  }
  /// The kind: "fashion-mnist", "mnist", "kmnist", "idx", "cifar10",
  /// "cifar100" or "folder" (or the name given).
  const std::string& name() const {
    return name_;
  }
  /// C of the images (1 grey, 3 RGB); 0 when there are none.
  int64_t channels() const {
    return images_.defined() ? images_.size(1) : 0;
  }
  /// H of the images in pixels; 0 when there are none.
  int64_t height() const {
    return images_.defined() ? images_.size(2) : 0;
  }
  /// W of the images in pixels; 0 when there are none.
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

} // namespace detail

} // namespace resnet::data
