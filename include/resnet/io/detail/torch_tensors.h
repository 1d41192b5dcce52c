#pragma once

// Tensors as torch.save pickles them: storage classes and dtypes, the
// rebuild calls (`torch._utils._rebuild_tensor_v2` and the calls wrapped
// around it), each checked against its storage, built without running
// anything.

#include <resnet/io/detail/mapped_file.h>
#include <resnet/io/detail/read_budget.h>
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

/// The typed storage classes torch.save names, and their dtypes: one table
/// for reading and writing.
inline constexpr std::pair<const char*, c10::ScalarType> kStorageTypes[] = {
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
};

/// The dtype of a storage class such as `torch.FloatStorage` (also the old
/// `torch.cuda.FloatStorage`); `torch.UntypedStorage` holds bytes.
inline std::optional<c10::ScalarType> storage_dtype(const PyValue& type) {
  if (!type.is(PyKind::Global) ||
      (type.module() != "torch" && type.module() != "torch.cuda")) {
    return std::nullopt;
  }
  const auto& name = type.name();
  if (name == "UntypedStorage") {
    return c10::ScalarType::Byte;
  }
  for (const auto& [storage, dtype] : kStorageTypes) {
    if (name == storage) {
      return dtype;
    }
  }
  return std::nullopt;
}

/// The storage class torch.save names for `dtype`, or nullptr.
inline const char* storage_type_name(c10::ScalarType dtype) {
  for (const auto& [storage, type] : kStorageTypes) {
    if (type == dtype) {
      return storage;
    }
  }
  return nullptr;
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

// ---- persistent ids ---------------------------------------------------------

/// A storage as a pickle's persistent id names it:
/// `('storage', <type>, <key>, <location>, <numel>[, <view>])`.
struct StorageId {
  c10::ScalarType dtype;
  std::string key;
  int64_t nbytes;
};

/// Checks a persistent id of `arity` items (5 in zip archives, 6 in the
/// legacy format) and reads the storage it names.
inline StorageId storage_id(const PyValue& pid, size_t arity) {
  TORCH_CHECK(
      pid.is(PyKind::Tuple) && pid.size() == arity && pid[0].is_string() &&
          pid[0].as_string() == "storage" && pid[2].is_string() &&
          pid[4].is(PyKind::Int),
      "unknown persistent id ",
      pid.repr(120));
  const auto dtype = storage_dtype(pid[1]);
  TORCH_CHECK(dtype, "unsupported storage type ", pid[1].repr(60));
  return {
      *dtype,
      pid[2].as_string(),
      checked_mul(
          pid[4].as_int(),
          static_cast<int64_t>(c10::elementSize(*dtype)),
          "storage size")};
}

// ---- storages ---------------------------------------------------------------

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

} // namespace resnet::detail
