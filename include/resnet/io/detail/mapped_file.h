#pragma once

// A read-only file mapped into memory, shared by the tensors that view it.
// The weight readers use it to copy tensor data from the page cache straight
// into its destination (a model's parameters) without an intermediate
// buffer.

#include <resnet/config.h>
#include <resnet/io/detail/file.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if RESNET_HAS_MMAP
#include <sys/mman.h>
#endif

namespace resnet::detail {

/// The bytes of a file, mapped privately (copy-on-write: writing through a
/// tensor that views them never changes the file). Where there is no mmap,
/// the file is read into memory instead.
class MappedFile {
 public:
  /// Maps the regular file at `path`; a `c10::Error` if it cannot.
  static std::shared_ptr<const MappedFile> open(const std::string& path) {
    return std::shared_ptr<const MappedFile>(new MappedFile(path));
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  ~MappedFile() {
#if RESNET_HAS_MMAP
    if (data_ != nullptr && size_ > 0) {
      ::munmap(data_, size_);
    }
#endif
  }

  const char* data() const {
    return static_cast<const char*>(data_);
  }
  size_t size() const {
    return size_;
  }

  /// A CPU tensor of `sizes` and `dtype` viewing the `nbytes` bytes at
  /// `offset`, keeping the mapping alive. The bytes must lie in the file.
  static torch::Tensor view(
      const std::shared_ptr<const MappedFile>& file,
      uint64_t offset,
      uint64_t nbytes,
      c10::IntArrayRef sizes,
      c10::ScalarType dtype) {
    TORCH_CHECK(
        offset <= file->size() && nbytes <= file->size() - offset,
        "bytes ",
        offset,
        "..",
        offset + nbytes,
        " lie outside the file of ",
        file->size(),
        " bytes");
    if (nbytes == 0) {
      return torch::empty(sizes, torch::TensorOptions().dtype(dtype));
    }
    auto keep = file;
    return torch::from_blob(
        const_cast<char*>(file->data()) + offset,
        sizes,
        [keep](void*) mutable { keep.reset(); },
        torch::TensorOptions().dtype(dtype));
  }

 private:
  explicit MappedFile(const std::string& path) {
    ReadableFile file(path);
    size_ = static_cast<size_t>(file.size());
#if RESNET_HAS_MMAP
    if (size_ > 0) {
      void* p = ::mmap(
          nullptr,
          size_,
          PROT_READ | PROT_WRITE,
          MAP_PRIVATE,
          file.descriptor(),
          0);
      TORCH_CHECK(
          p != MAP_FAILED, "cannot map it into memory: ", std::strerror(errno));
      data_ = p;
    }
#else
    bytes_ = file.read_all();
    data_ = bytes_.data();
#endif
  }

  void* data_ = nullptr;
  size_t size_ = 0;
#if !RESNET_HAS_MMAP
  std::vector<char> bytes_;
#endif
};

} // namespace resnet::detail
