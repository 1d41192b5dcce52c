#pragma once

// Folders of PNG and JPEG images by class (torchvision's ImageFolder rules),
// decoded, resized and centre-cropped to one size on worker threads.

#include <resnet/data/image.h>
#include <resnet/data/image_dataset.h>
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
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace resnet::data {

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

/// The PNG and JPEG files under `dir` (following symlinks), folders in
/// sorted path order and the files of each in sorted name order, as
/// torchvision's ImageFolder orders them; other image formats are refused.
inline std::vector<std::string> list_images(const std::string& dir) {
  return detail::image_files(dir);
}

} // namespace resnet::data
