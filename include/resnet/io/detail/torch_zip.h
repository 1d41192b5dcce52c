#pragma once

// The zip archive torch.save writes since PyTorch 1.6
// (`<archive>/data.pkl`, `<archive>/data/<key>`, `<archive>/byteorder`),
// read through the library's zip reader; storages view the mapped file where
// they can.

#include <resnet/io/detail/mapped_file.h>
#include <resnet/io/detail/read_budget.h>
#include <resnet/io/detail/torch_tensors.h>
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

/// The records of a torch.save or TorchScript archive by their names within
/// its folder: like PyTorch's reader, the folder is the first record's, and
/// records outside it are ignored.
class TorchArchive {
 public:
  TorchArchive(const char* data, size_t size, ReadBudget& budget)
      : zip_(data, size, budget) {
    TORCH_CHECK(!zip_.entries().empty(), "zip: the archive is empty");
    const auto& first = zip_.entries().front().name;
    const auto slash = first.find('/');
    TORCH_CHECK(
        slash != std::string::npos,
        "zip: the first record is not in a folder: '",
        ZipArchive::clip(first),
        "'");
    prefix_ = first.substr(0, slash + 1);
  }

  const ZipArchive& zip() const {
    return zip_;
  }
  /// The record `name` of the folder, or nullptr.
  const ZipEntry* find(const std::string& name) const {
    return zip_.find(prefix_ + name);
  }

 private:
  ZipArchive zip_;
  std::string prefix_;
};

/// Reads the root object of a torch.save archive (or the `data.pkl` of a
/// TorchScript archive) in the `size` bytes at `data`. With `mapped` (the
/// file those bytes are the mapping of), tensors of stored little-endian
/// records view the mapping (copy-on-write) instead of owning copies;
/// everything else is copied (and byte-swapped where the archive is
/// big-endian) into memory of its own.
inline PyValue read_torch_zip(
    const char* data,
    size_t size,
    ReadBudget& budget,
    std::shared_ptr<const MappedFile> mapped = nullptr) {
  const TorchArchive archive(data, size, budget);
  const ZipEntry* pkl = archive.find("data.pkl");
  TORCH_CHECK(
      pkl, "the zip archive holds no data.pkl (not written by torch.save)");

  bool big_endian = false;
  if (const ZipEntry* bo = archive.find("byteorder")) {
    TORCH_CHECK(bo->size <= 16, "zip: byteorder record too long");
    const auto bytes = archive.zip().read(*bo, budget);
    const std::string order(bytes.begin(), bytes.end());
    TORCH_CHECK(
        order == "little" || order == "big",
        "unknown byteorder '",
        ZipArchive::clip(order),
        "'");
    big_endian = order == "big";
  }

  // One storage per record, made once however many tensors use it.
  std::unordered_map<const ZipEntry*, c10::Storage> loaded;
  auto persistent_load = [&](Unpickler& u, const PyValue& pid) -> PyValue {
    const auto id = storage_id(pid, 5);
    const auto dtype = id.dtype;
    const std::string name = "data/" + id.key;
    const int64_t nbytes = id.nbytes;
    const ZipEntry* r = archive.find(name);
    TORCH_CHECK(r, "zip: no record '", ZipArchive::clip(name), "'");
    TORCH_CHECK(
        r->size == static_cast<uint64_t>(nbytes),
        "zip: record '",
        ZipArchive::clip(name),
        "' has ",
        r->size,
        " bytes, its storage needs ",
        nbytes);
    auto it = loaded.find(r);
    if (it == loaded.end()) {
      c10::Storage storage;
      if (mapped && r->stored && !big_endian && nbytes > 0) {
        storage = mapped_storage(
            mapped,
            static_cast<uint64_t>(archive.zip().stored_data(*r) - data),
            static_cast<size_t>(nbytes));
      } else {
        if (!r->stored) {
          // Only what inflates counts: a stored record's bytes are in the
          // file already.
          budget.spend(r->size, "inflated tensor data");
        }
        storage = owned_storage(static_cast<size_t>(nbytes));
        if (nbytes > 0) {
          void* bytes = storage.data_ptr().get();
          archive.zip().read(*r, static_cast<char*>(bytes));
          if (big_endian) {
            swap_bytes(bytes, storage.nbytes(), dtype);
          }
        }
      }
      it = loaded.emplace(r, std::move(storage)).first;
    }
    return u.make_storage({it->second, dtype, 0, nbytes});
  };
  std::vector<char> inflated;
  const char* pkl_data = nullptr;
  if (pkl->stored) {
    pkl_data = archive.zip().stored_data(*pkl);
  } else {
    inflated = archive.zip().read(*pkl, budget);
    pkl_data = inflated.data();
  }
  return Unpickler(
             pkl_data,
             static_cast<size_t>(pkl->size),
             persistent_load,
             torch_call,
             {},
             &budget)
      .parse();
}

} // namespace resnet::detail
