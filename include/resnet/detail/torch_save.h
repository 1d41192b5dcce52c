#pragma once

// The files torch.save writes, read without TorchScript: the zip archive of
// PyTorch >= 1.6 (`<archive>/data.pkl`, `<archive>/data/<key>`,
// `<archive>/byteorder`) and the legacy stream of pickles that came before
// it (and that `_use_new_zipfile_serialization=False` still writes). Tensors
// come back on the CPU with their dtype, sizes, strides and storage offset,
// sharing storage where Python's did. And the writer of such zip files for
// a state dict, which `torch.load(weights_only=True)` accepts.

#include <resnet/detail/mapped_file.h>
#include <resnet/detail/pickle.h>
#include <resnet/detail/read_budget.h>
#include <resnet/detail/zip.h>
#include <resnet/io.h>

#include <ATen/core/Tensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Storage.h>
#include <c10/core/TensorImpl.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

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

/// Dims a tensor of a checkpoint may have.
inline constexpr size_t kMaxTensorDims = 64;
/// Largest element count or byte count accepted anywhere (2^62).
inline constexpr int64_t kMaxTensorExtent = int64_t{1} << 62;

// ---- checked arithmetic ---------------------------------------------------

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  TORCH_CHECK(
      a >= 0 && b >= 0 && (a == 0 || b <= kMaxTensorExtent / a),
      what,
      " overflows (",
      a,
      " * ",
      b,
      ")");
  return a * b;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  TORCH_CHECK(
      a >= 0 && b >= 0 && a <= kMaxTensorExtent - b,
      what,
      " overflows (",
      a,
      " + ",
      b,
      ")");
  return a + b;
}

// ---- storage types and dtypes ---------------------------------------------

/// The dtype of a storage class such as `torch.FloatStorage` (also the old
/// `torch.cuda.FloatStorage`); `torch.UntypedStorage` holds bytes.
inline std::optional<c10::ScalarType> storage_dtype(const PyValue& type) {
  if (!type.is(PyKind::Global) ||
      (type.module() != "torch" && type.module() != "torch.cuda")) {
    return std::nullopt;
  }
  static const std::map<std::string, c10::ScalarType> table = {
      {"FloatStorage", c10::ScalarType::Float},
      {"DoubleStorage", c10::ScalarType::Double},
      {"HalfStorage", c10::ScalarType::Half},
      {"BFloat16Storage", c10::ScalarType::BFloat16},
      {"LongStorage", c10::ScalarType::Long},
      {"IntStorage", c10::ScalarType::Int},
      {"ShortStorage", c10::ScalarType::Short},
      {"CharStorage", c10::ScalarType::Char},
      {"ByteStorage", c10::ScalarType::Byte},
      {"BoolStorage", c10::ScalarType::Bool},
      {"ComplexFloatStorage", c10::ScalarType::ComplexFloat},
      {"ComplexDoubleStorage", c10::ScalarType::ComplexDouble},
      {"UntypedStorage", c10::ScalarType::Byte},
  };
  const auto it = table.find(type.name());
  if (it == table.end()) {
    return std::nullopt;
  }
  return it->second;
}

/// The storage class torch.save names for `dtype`, or nullptr.
inline const char* storage_type_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return "FloatStorage";
    case c10::ScalarType::Double:
      return "DoubleStorage";
    case c10::ScalarType::Half:
      return "HalfStorage";
    case c10::ScalarType::BFloat16:
      return "BFloat16Storage";
    case c10::ScalarType::Long:
      return "LongStorage";
    case c10::ScalarType::Int:
      return "IntStorage";
    case c10::ScalarType::Short:
      return "ShortStorage";
    case c10::ScalarType::Char:
      return "CharStorage";
    case c10::ScalarType::Byte:
      return "ByteStorage";
    case c10::ScalarType::Bool:
      return "BoolStorage";
    case c10::ScalarType::ComplexFloat:
      return "ComplexFloatStorage";
    case c10::ScalarType::ComplexDouble:
      return "ComplexDoubleStorage";
    default:
      return nullptr;
  }
}

/// The dtype a global such as `torch.float32` names.
inline std::optional<c10::ScalarType> dtype_of_global(const PyValue& g) {
  if (!g.is(PyKind::Global) || g.module() != "torch") {
    return std::nullopt;
  }
  static const std::map<std::string, c10::ScalarType> table = {
      {"float32", c10::ScalarType::Float},
      {"float", c10::ScalarType::Float},
      {"float64", c10::ScalarType::Double},
      {"double", c10::ScalarType::Double},
      {"float16", c10::ScalarType::Half},
      {"half", c10::ScalarType::Half},
      {"bfloat16", c10::ScalarType::BFloat16},
      {"int64", c10::ScalarType::Long},
      {"long", c10::ScalarType::Long},
      {"int32", c10::ScalarType::Int},
      {"int", c10::ScalarType::Int},
      {"int16", c10::ScalarType::Short},
      {"short", c10::ScalarType::Short},
      {"int8", c10::ScalarType::Char},
      {"uint8", c10::ScalarType::Byte},
      {"bool", c10::ScalarType::Bool},
      {"complex64", c10::ScalarType::ComplexFloat},
      {"cfloat", c10::ScalarType::ComplexFloat},
      {"complex128", c10::ScalarType::ComplexDouble},
      {"cdouble", c10::ScalarType::ComplexDouble},
  };
  const auto it = table.find(g.name());
  if (it == table.end()) {
    return std::nullopt;
  }
  return it->second;
}

/// Reverses the bytes of each element (each half of a complex one).
inline void swap_bytes(void* data, size_t nbytes, c10::ScalarType dtype) {
  size_t width = c10::elementSize(dtype);
  if (c10::isComplexType(dtype)) {
    width /= 2;
  }
  if (width <= 1) {
    return;
  }
  auto* p = static_cast<char*>(data);
  for (size_t k = 0; k + width <= nbytes; k += width) {
    std::reverse(p + k, p + k + width);
  }
}

// ---- tensors ---------------------------------------------------------------

inline std::vector<int64_t> int_tuple(const PyValue& v, const char* what) {
  TORCH_CHECK(
      v.is(PyKind::Tuple) || v.is(PyKind::List),
      what,
      " must be a tuple of int, got ",
      v.kind_name());
  TORCH_CHECK(
      v.size() <= kMaxTensorDims,
      what,
      " has ",
      v.size(),
      " dims, more than ",
      kMaxTensorDims);
  std::vector<int64_t> out;
  for (const auto& e : v.elements()) {
    TORCH_CHECK(
        e.is(PyKind::Int),
        what,
        " must be a tuple of int, has a ",
        e.kind_name());
    out.push_back(e.as_int());
  }
  return out;
}

/// A CPU tensor of `dtype` viewing `storage` like `Tensor.set_(storage,
/// offset, size, stride)`, after checking that it fits.
inline at::Tensor view_storage(
    const PyStorage& storage,
    c10::ScalarType dtype,
    int64_t offset,
    const std::vector<int64_t>& size,
    const std::vector<int64_t>& stride) {
  TORCH_CHECK(
      size.size() == stride.size(),
      "tensor with ",
      size.size(),
      " sizes but ",
      stride.size(),
      " strides");
  const auto item = static_cast<int64_t>(c10::elementSize(dtype));
  TORCH_CHECK(
      storage.byte_offset % item == 0 && storage.nbytes % item == 0,
      "a ",
      dtype,
      " tensor on a storage of ",
      storage.nbytes,
      " bytes at byte ",
      storage.byte_offset);
  TORCH_CHECK(
      offset >= 0 && offset <= kMaxTensorExtent,
      "tensor with storage offset ",
      offset);
  const int64_t capacity = storage.nbytes / item;
  int64_t numel = 1;
  int64_t last = 0;
  for (size_t d = 0; d < size.size(); ++d) {
    TORCH_CHECK(
        size[d] >= 0 && stride[d] >= 0,
        "tensor with size ",
        c10::IntArrayRef(size),
        " and stride ",
        c10::IntArrayRef(stride),
        " (negative)");
    numel = checked_mul(numel, size[d], "tensor element count");
  }
  if (numel > 0) {
    for (size_t d = 0; d < size.size(); ++d) {
      last = checked_add(
          last,
          checked_mul(size[d] - 1, stride[d], "tensor extent"),
          "tensor extent");
    }
    const int64_t end = checked_add(offset, last + 1, "tensor extent");
    TORCH_CHECK(
        end <= capacity,
        "tensor of size ",
        c10::IntArrayRef(size),
        ", stride ",
        c10::IntArrayRef(stride),
        " and offset ",
        offset,
        " needs ",
        end,
        " elements of its storage, which has ",
        capacity);
  }
  auto impl = c10::make_intrusive<c10::TensorImpl>(
      c10::Storage(storage.storage),
      c10::DispatchKeySet(c10::DispatchKey::CPU),
      c10::scalarTypeToTypeMeta(dtype));
  impl->set_sizes_and_strides(
      c10::IntArrayRef(size),
      c10::IntArrayRef(stride),
      storage.byte_offset / item + offset);
  return at::Tensor(std::move(impl));
}

inline void set_requires_grad(at::Tensor& t, const PyValue& flag) {
  TORCH_CHECK(
      flag.is(PyKind::Bool),
      "requires_grad must be a bool, got ",
      flag.kind_name());
  if (flag.as_bool()) {
    TORCH_CHECK(
        c10::isFloatingType(t.scalar_type()) ||
            c10::isComplexType(t.scalar_type()),
        "a ",
        t.scalar_type(),
        " tensor cannot require grad");
    t.set_requires_grad(true);
  }
}

/// `torch._tensor._rebuild_from_type_v2(func, type, args, state)` with a
/// global `func` and a tuple `args`.
inline bool is_rebuild_from_type(const PyValue& callable, const PyValue& args) {
  return callable.is(PyKind::Global) && callable.module() == "torch._tensor" &&
      callable.name() == "_rebuild_from_type_v2" && args.is(PyKind::Tuple) &&
      args.size() == 4 && args[0].is(PyKind::Global) &&
      args[2].is(PyKind::Tuple);
}

/// Builds the value of torch's tensor-making globals; nullopt for anything
/// else, which then stays an opaque object.
inline std::optional<PyValue>
torch_call(Unpickler& u, const PyValue& callable, const PyValue& args) {
  const std::string& module = callable.module();
  const std::string& name = callable.name();
  const size_t n = args.size();
  auto tensor = [&](const PyValue& storage_value,
                    std::optional<c10::ScalarType> dtype) {
    TORCH_CHECK(
        storage_value.is(PyKind::Storage),
        name,
        " needs a storage, got ",
        storage_value.kind_name());
    const auto& s = storage_value.as_storage();
    TORCH_CHECK(args[1].is(PyKind::Int), name, ": storage offset not an int");
    return view_storage(
        s,
        dtype.value_or(s.dtype),
        args[1].as_int(),
        int_tuple(args[2], "tensor size"),
        int_tuple(args[3], "tensor stride"));
  };
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor" && n == 4) {
      return u.make_tensor(tensor(args[0], std::nullopt));
    }
    if (name == "_rebuild_tensor_v2" && (n == 6 || n == 7)) {
      auto t = tensor(args[0], std::nullopt);
      set_requires_grad(t, args[4]);
      return u.make_tensor(std::move(t));
    }
    if (name == "_rebuild_tensor_v3" && (n == 7 || n == 8)) {
      const auto dtype = dtype_of_global(args[6]);
      TORCH_CHECK(dtype, "unsupported tensor dtype ", args[6].repr(60));
      auto t = tensor(args[0], dtype);
      set_requires_grad(t, args[4]);
      return u.make_tensor(std::move(t));
    }
    if ((name == "_rebuild_parameter" && n == 3) ||
        (name == "_rebuild_parameter_with_state" && n == 4)) {
      TORCH_CHECK(
          args[0].is_tensor(),
          name,
          " needs a tensor, got ",
          args[0].kind_name());
      auto t = args[0].as_tensor();
      set_requires_grad(t, args[1]);
      return args[0];
    }
    return std::nullopt;
  }
  if (module == "torch.nn.parameter" && name == "Parameter" &&
      (n == 1 || n == 2) && args[0].is_tensor()) {
    auto t = args[0].as_tensor();
    if (n == 2) {
      set_requires_grad(t, args[1]);
    } else if (c10::isFloatingType(t.scalar_type())) {
      t.set_requires_grad(true);
    }
    return args[0];
  }
  if (is_rebuild_from_type(callable, args)) {
    // A tensor subclass: build the tensor; the subclass is dropped. Such
    // calls may wrap each other (the function they call is one again):
    // unwrapped in a loop, as deep as the pickle machine allows values to
    // nest, never by recursion.
    PyValue f = callable;
    PyValue a = args;
    for (size_t depth = 0; is_rebuild_from_type(f, a); ++depth) {
      TORCH_CHECK(
          depth < PickleLimits().max_depth,
          "tensor subclass rebuilds nested deeper than ",
          PickleLimits().max_depth,
          " levels");
      u.budget().step("tensor subclass rebuilds");
      f = a[0];
      a = a[2];
    }
    auto made = torch_call(u, f, a);
    if (made && made->is_tensor()) {
      return made;
    }
  }
  return std::nullopt;
}

// ---- the zip container -----------------------------------------------------

/// A storage's bytes that stay in the mapped file (`mapped`, at `offset`),
/// keeping the mapping alive as long as the storage lives.
inline c10::Storage mapped_storage(
    const std::shared_ptr<const MappedFile>& mapped,
    uint64_t offset,
    size_t nbytes) {
  TORCH_CHECK(
      offset <= mapped->size() && nbytes <= mapped->size() - offset,
      "zip: a record runs past the end of the file");
  auto* owner = new std::shared_ptr<const MappedFile>(mapped);
  c10::DataPtr data(
      const_cast<char*>(mapped->data()) + offset,
      owner,
      [](void* ctx) {
        delete static_cast<std::shared_ptr<const MappedFile>*>(ctx);
      },
      c10::Device(c10::kCPU));
  return c10::Storage(
      c10::Storage::use_byte_size_t(),
      nbytes,
      std::move(data),
      /*allocator=*/nullptr,
      /*resizable=*/false);
}

/// A storage of `nbytes` bytes in memory of its own.
inline c10::Storage owned_storage(size_t nbytes) {
  return c10::Storage(
      c10::Storage::use_byte_size_t(),
      nbytes,
      c10::GetCPUAllocator()->allocate(nbytes),
      /*allocator=*/nullptr,
      /*resizable=*/false);
}

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
    TORCH_CHECK(
        pid.is(PyKind::Tuple) && pid.size() == 5 && pid[0].is_string() &&
            pid[0].as_string() == "storage" && pid[2].is_string() &&
            pid[4].is(PyKind::Int),
        "unknown persistent id ",
        pid.repr(120));
    const auto dtype = storage_dtype(pid[1]);
    TORCH_CHECK(dtype, "unsupported storage type ", pid[1].repr(60));
    const std::string name = "data/" + pid[2].as_string();
    const int64_t nbytes = checked_mul(
        pid[4].as_int(),
        static_cast<int64_t>(c10::elementSize(*dtype)),
        "storage size");
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
            swap_bytes(bytes, storage.nbytes(), *dtype);
          }
        }
      }
      it = loaded.emplace(r, std::move(storage)).first;
    }
    return u.make_storage({it->second, *dtype, 0, nbytes});
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

// ---- the legacy container --------------------------------------------------

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
    TORCH_CHECK(
        pid.is(PyKind::Tuple) && pid.size() == 6 && pid[0].is_string() &&
            pid[0].as_string() == "storage" && pid[2].is_string() &&
            pid[4].is(PyKind::Int),
        "unknown persistent id ",
        pid.repr(120));
    const auto dtype = storage_dtype(pid[1]);
    TORCH_CHECK(dtype, "unsupported storage type ", pid[1].repr(60));
    const int64_t item = static_cast<int64_t>(c10::elementSize(*dtype));
    const int64_t nbytes = checked_mul(pid[4].as_int(), item, "storage size");
    const std::string& key = pid[2].as_string();
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
      it =
          roots
              .emplace(
                  key, Root{owned_storage(static_cast<size_t>(nbytes)), *dtype})
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
    PyStorage s{it->second.storage, *dtype, 0, nbytes};
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

// ---- the entry points ------------------------------------------------------

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

/// torch.save's zip archive of an OrderedDict name -> tensor, in the order
/// of `state`: protocol 2, only globals torch.load(weights_only=True)
/// allows, each tensor contiguous in its own storage.
inline std::vector<char> write_torch_save(const resnet::StateDict& state) {
  const uint16_t probe = 1;
  uint8_t first_byte = 0;
  std::memcpy(&first_byte, &probe, 1);
  TORCH_CHECK(first_byte == 1, "write_torch_save needs a little-endian host");

  std::vector<at::Tensor> tensors;
  Pickler p;
  p.global("collections", "OrderedDict");
  p.empty_tuple();
  p.reduce();
  if (!state.empty()) {
    p.mark();
  }
  std::set<std::string> names;
  for (const auto& item : state) {
    const auto& name = item.first;
    TORCH_CHECK(!name.empty(), "a tensor has an empty name");
    TORCH_CHECK(
        names.insert(name).second, "tensor '", name, "' is given twice");
    TORCH_CHECK(item.second.defined(), "tensor '", name, "' is undefined");
    at::Tensor t = item.second.is_cpu() ? item.second : item.second.cpu();
    t = t.contiguous();
    const char* type = storage_type_name(t.scalar_type());
    TORCH_CHECK(
        type,
        "tensor '",
        name,
        "' has dtype ",
        t.scalar_type(),
        ", which torch.save files of this kind cannot hold");
    p.string(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark();
    p.string("storage");
    p.global("torch", type);
    p.string(std::to_string(tensors.size()));
    p.string("cpu");
    p.integer(t.numel());
    p.tuple();
    p.binpersid();
    p.integer(0);
    p.mark();
    for (const auto s : t.sizes()) {
      p.integer(s);
    }
    p.tuple();
    p.mark();
    for (const auto s : t.strides()) {
      p.integer(s);
    }
    p.tuple();
    p.boolean(false);
    p.global("collections", "OrderedDict");
    p.empty_tuple();
    p.reduce();
    p.tuple();
    p.reduce();
    tensors.push_back(std::move(t));
  }
  if (!state.empty()) {
    p.setitems();
  }
  const std::string pickle = p.finish();

  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer(
      [&out](const void* data, size_t n) {
        const auto* c = static_cast<const char*>(data);
        out.insert(out.end(), c, c + n);
        return n;
      });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeRecord("byteorder", "little", 6);
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& t = tensors[k];
    writer.writeRecord(
        "data/" + std::to_string(k),
        t.data_ptr(),
        static_cast<size_t>(t.numel()) * t.element_size());
  }
  writer.writeEndOfFile();
  return out;
}

} // namespace resnet::detail
