#pragma once

// The legacy stream of pickles torch.save wrote before PyTorch 1.6 (and
// still writes with `_use_new_zipfile_serialization=False`).

#include <resnet/io/detail/read_budget.h>
#include <resnet/io/detail/torch_tensors.h>
#include <resnet/io/detail/unpickler.h>

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

inline const std::string& legacy_magic() {
  // 0x1950a86a20f9469cfc6c as pickle's LONG1 writes it, little-endian.
  static const std::string magic(
      "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  return magic;
}

/// Reads the root object of a legacy torch.save stream from memory,
/// charging `budget`.
inline PyValue
read_torch_legacy(const char* data, size_t size, ReadBudget& budget) {
  size_t pos = 0;
  auto next = [&](Unpickler::PersistentLoad pl, Unpickler::CallHook hook) {
    Unpickler u(
        data + pos, size - pos, std::move(pl), std::move(hook), {}, &budget);
    PyValue v = u.parse();
    pos += u.consumed();
    return v;
  };
  const PyValue magic = next(nullptr, nullptr);
  TORCH_CHECK(
      magic.is(PyKind::BigInt) && magic.bigint_bytes() == legacy_magic(),
      "not a torch.save file (no magic number)");
  const PyValue version = next(nullptr, nullptr);
  TORCH_CHECK(
      version.is(PyKind::Int) && version.as_int() == 1001,
      "unsupported legacy torch.save protocol ",
      version.repr(40));
  const PyValue sys_info = next(nullptr, nullptr);
  bool big_endian = false;
  if (sys_info.is_dict() && sys_info.contains("little_endian")) {
    const auto le = sys_info.get("little_endian");
    big_endian = le.is(PyKind::Bool) && !le.as_bool();
  }

  struct Root {
    c10::Storage storage;
    c10::ScalarType dtype;
  };
  std::unordered_map<std::string, Root> roots;
  int64_t declared = 0;
  auto persistent_load = [&](Unpickler& u, const PyValue& pid) -> PyValue {
    const auto id = storage_id(pid, 6);
    const auto dtype = id.dtype;
    const int64_t nbytes = id.nbytes;
    const std::string& key = id.key;
    const int64_t item = static_cast<int64_t>(c10::elementSize(dtype));
    auto it = roots.find(key);
    if (it == roots.end()) {
      // The bytes follow the pickles: all storages together must fit in
      // what is left of the input.
      declared = checked_add(declared, nbytes, "storage sizes");
      TORCH_CHECK(
          static_cast<uint64_t>(declared) <= size - pos,
          "storages declare ",
          declared,
          " bytes but the file has ",
          size - pos,
          " left");
      it = roots
               .emplace(
                   key, Root{owned_storage(static_cast<size_t>(nbytes)), dtype})
               .first;
    }
    TORCH_CHECK(
        static_cast<int64_t>(it->second.storage.nbytes()) == nbytes,
        "storage '",
        key,
        "' is used with ",
        nbytes,
        " and ",
        it->second.storage.nbytes(),
        " bytes");
    PyStorage s{it->second.storage, dtype, 0, nbytes};
    const PyValue view = pid[5];
    if (!view.is_none()) {
      TORCH_CHECK(
          view.is(PyKind::Tuple) && view.size() == 3 &&
              view[1].is(PyKind::Int) && view[2].is(PyKind::Int),
          "bad storage view ",
          view.repr(80));
      s.byte_offset = checked_mul(view[1].as_int(), item, "storage view");
      s.nbytes = checked_mul(view[2].as_int(), item, "storage view");
      TORCH_CHECK(
          checked_add(s.byte_offset, s.nbytes, "storage view") <= nbytes,
          "storage view of ",
          s.nbytes,
          " bytes at ",
          s.byte_offset,
          " past a storage of ",
          nbytes);
    }
    return u.make_storage(std::move(s));
  };
  PyValue root = next(persistent_load, torch_call);
  const PyValue keys = next(nullptr, nullptr);
  TORCH_CHECK(
      keys.is(PyKind::List), "the storage key list is a ", keys.kind_name());
  std::unordered_map<std::string, bool> filled;
  for (const auto& key_value : keys.elements()) {
    TORCH_CHECK(key_value.is_string(), "a storage key is not a str");
    const auto it = roots.find(key_value.as_string());
    TORCH_CHECK(
        it != roots.end(),
        "storage '",
        key_value.as_string(),
        "' is listed but no tensor uses it");
    TORCH_CHECK(
        filled.emplace(key_value.as_string(), true).second,
        "storage '",
        key_value.as_string(),
        "' is listed twice");
    TORCH_CHECK(size - pos >= 8, "the file ends before storage data");
    uint64_t count = 0;
    for (int k = 0; k < 8; ++k) {
      const int shift = big_endian ? 8 * (7 - k) : 8 * k;
      count |= static_cast<uint64_t>(static_cast<uint8_t>(data[pos + k]))
          << shift;
    }
    pos += 8;
    auto& storage = it->second.storage;
    const uint64_t item = c10::elementSize(it->second.dtype);
    TORCH_CHECK(
        count <= static_cast<uint64_t>(kMaxTensorExtent) / item &&
            count * item == storage.nbytes(),
        "storage '",
        key_value.as_string(),
        "' has ",
        count,
        " elements in the file and ",
        storage.nbytes() / item,
        " in the pickle");
    TORCH_CHECK(
        size - pos >= storage.nbytes(),
        "the file ends inside storage '",
        key_value.as_string(),
        "'");
    if (storage.nbytes() > 0) {
      std::memcpy(storage.data_ptr().get(), data + pos, storage.nbytes());
      if (big_endian) {
        swap_bytes(
            storage.data_ptr().get(), storage.nbytes(), it->second.dtype);
      }
    }
    pos += storage.nbytes();
  }
  TORCH_CHECK(
      filled.size() == roots.size(),
      roots.size() - filled.size(),
      " storage(s) used by tensors have no data in the file");
  return root;
}

} // namespace resnet::detail
