#pragma once

// The files torch.save writes, read without TorchScript: the zip archive of
// PyTorch >= 1.6 (`<archive>/data.pkl`, `<archive>/data/<key>`,
// `<archive>/byteorder`) and the legacy stream of pickles that came before
// it (and that `_use_new_zipfile_serialization=False` still writes). Tensors
// come back on the CPU with their dtype, sizes, strides and storage offset,
// sharing storage where Python's did. And the writer of such zip files for
// a state dict, which `torch.load(weights_only=True)` accepts.

#include <resnet/io/detail/mapped_file.h>
#include <resnet/io/detail/read_budget.h>
#include <resnet/io/detail/torch_legacy.h>
#include <resnet/io/detail/torch_save_writer.h>
#include <resnet/io/detail/torch_zip.h>
#include <resnet/io/detail/unpickler.h>
#include <resnet/io/detail/zip.h>

#include <ATen/core/Tensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Storage.h>
#include <c10/core/TensorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace resnet::detail {

/// A zip archive (local file header first) with a `<folder>/data.pkl`.
inline bool looks_like_torch_zip(const char* data, size_t size) {
  if (!has_zip_magic(data, size)) {
    return false;
  }
  try {
    ReadBudget budget(size);
    return TorchArchive(data, size, budget).find("data.pkl") != nullptr;
  } catch (const c10::Error&) {
  }
  return false;
}

/// A pickle whose value is torch.save's legacy magic number.
inline bool looks_like_torch_legacy(const char* data, size_t size) {
  if (size < 2 || static_cast<uint8_t>(data[0]) != 0x80) {
    return false;
  }
  try {
    const PyValue magic = Unpickler(data, std::min<size_t>(size, 64)).parse();
    return magic.is(PyKind::BigInt) && magic.bigint_bytes() == legacy_magic();
  } catch (const std::exception&) {
  }
  return false;
}

template <class F>
PyValue with_c10_errors(F&& f) {
  try {
    return f();
  } catch (const c10::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    TORCH_CHECK(false, "out of memory while reading torch.save data");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
}

/// The root object of torch.save data (zip or legacy) in the `size` bytes
/// at `data`, charging `budget`; tensors on the CPU. With `mapped` (the file
/// those bytes are the mapping of), tensors of a zip archive's stored
/// records may view it (see `read_torch_zip`); otherwise they own copies.
inline PyValue read_torch_save(
    const char* data,
    size_t size,
    ReadBudget& budget,
    std::shared_ptr<const MappedFile> mapped = nullptr) {
  return with_c10_errors([&] {
    if (has_zip_magic(data, size)) {
      return read_torch_zip(data, size, budget, std::move(mapped));
    }
    TORCH_CHECK(
        looks_like_torch_legacy(data, size),
        "not a torch.save file (neither a zip archive nor the legacy format)");
    return read_torch_legacy(data, size, budget);
  });
}

/// `read_torch_save` of bytes in memory with a budget for their size; the
/// tensors own copies of their bytes.
inline PyValue read_torch_save_bytes(const char* data, size_t size) {
  ReadBudget budget(size);
  return read_torch_save(data, size, budget);
}

/// `read_torch_save` of the file at `path` (a regular file), with a budget
/// for its size; the tensors own copies of their bytes.
inline PyValue read_torch_save(const std::string& path) {
  const auto file = MappedFile::open(path);
  ReadBudget budget(file->size());
  return read_torch_save(file->data(), file->size(), budget);
}

} // namespace resnet::detail
