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
#include <resnet/io.h>

#include <ATen/core/Tensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Storage.h>
#include <c10/core/TensorImpl.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/file_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
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
  if (module == "torch._tensor" && name == "_rebuild_from_type_v2" && n == 4 &&
      args[0].is(PyKind::Global) && args[2].is(PyKind::Tuple)) {
    // A tensor subclass: build the tensor; the subclass is dropped.
    auto made = torch_call(u, args[0], args[2]);
    if (made && made->is_tensor()) {
      return made;
    }
  }
  return std::nullopt;
}

// ---- the zip container -----------------------------------------------------

/// What the central directory of a zip says about one record.
struct ZipRecord {
  std::string name;
  uint64_t size = 0;
  uint64_t data_offset = 0;
  bool stored = true;
};

inline uint64_t le_at(const std::vector<char>& b, size_t pos, size_t n) {
  TORCH_CHECK(pos + n <= b.size(), "zip: a header runs past its end");
  uint64_t v = 0;
  for (size_t k = 0; k < n; ++k) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(b[pos + k])) << (8 * k);
  }
  return v;
}

inline std::vector<char> read_at(
    const caffe2::serialize::ReadAdapterInterface& in,
    uint64_t pos,
    uint64_t n) {
  TORCH_CHECK(
      pos <= in.size() && n <= in.size() - pos,
      "zip: a header at byte ",
      pos,
      " runs past the end of the file (",
      in.size(),
      " bytes)");
  std::vector<char> out(n);
  if (n > 0) {
    TORCH_CHECK(
        in.read(pos, out.data(), n, "zip header") == n,
        "zip: short read at byte ",
        pos);
  }
  return out;
}

/// The records of a zip archive after checking that each lies within the
/// file and that none could expand beyond what deflate allows, so that
/// reading one never allocates more than the input justifies.
inline std::vector<ZipRecord> zip_records(
    const caffe2::serialize::ReadAdapterInterface& in) {
  const uint64_t size = in.size();
  TORCH_CHECK(size >= 22, "zip: file of ", size, " bytes is too short");
  const uint64_t tail_size = std::min<uint64_t>(size, 22 + 65535);
  const auto tail = read_at(in, size - tail_size, tail_size);
  size_t eocd = std::string::npos;
  for (size_t k = tail_size - 22 + 1; k-- > 0;) {
    if (le_at(tail, k, 4) == 0x06054b50) {
      eocd = k;
      break;
    }
  }
  TORCH_CHECK(eocd != std::string::npos, "zip: no end of central directory");
  uint64_t entries = le_at(tail, eocd + 10, 2);
  uint64_t cd_size = le_at(tail, eocd + 12, 4);
  uint64_t cd_offset = le_at(tail, eocd + 16, 4);
  if (entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    const uint64_t eocd_pos = size - tail_size + eocd;
    TORCH_CHECK(eocd_pos >= 20, "zip: no zip64 locator");
    const auto locator = read_at(in, eocd_pos - 20, 20);
    TORCH_CHECK(le_at(locator, 0, 4) == 0x07064b50, "zip: no zip64 locator");
    const auto record = read_at(in, le_at(locator, 8, 8), 56);
    TORCH_CHECK(
        le_at(record, 0, 4) == 0x06064b50, "zip: bad zip64 directory record");
    entries = le_at(record, 32, 8);
    cd_size = le_at(record, 40, 8);
    cd_offset = le_at(record, 48, 8);
  }
  TORCH_CHECK(
      entries <= cd_size / 46 + 1,
      "zip: ",
      entries,
      " entries cannot fit a directory of ",
      cd_size,
      " bytes");
  const auto cd = read_at(in, cd_offset, cd_size);
  std::vector<ZipRecord> out;
  out.reserve(entries);
  size_t p = 0;
  for (uint64_t e = 0; e < entries; ++e) {
    TORCH_CHECK(
        le_at(cd, p, 4) == 0x02014b50, "zip: bad central directory entry");
    const auto flags = le_at(cd, p + 8, 2);
    const auto method = le_at(cd, p + 10, 2);
    uint64_t comp = le_at(cd, p + 20, 4);
    uint64_t uncomp = le_at(cd, p + 24, 4);
    const auto name_len = le_at(cd, p + 28, 2);
    const auto extra_len = le_at(cd, p + 30, 2);
    const auto comment_len = le_at(cd, p + 32, 2);
    uint64_t local = le_at(cd, p + 42, 4);
    TORCH_CHECK(
        p + 46 + name_len + extra_len + comment_len <= cd.size(),
        "zip: central directory entry runs past its end");
    ZipRecord r;
    r.name.assign(cd.data() + p + 46, name_len);
    // The zip64 extra field holds the sizes and offset that do not fit.
    for (size_t x = p + 46 + name_len;
         x + 4 <= p + 46 + name_len + extra_len;) {
      const auto id = le_at(cd, x, 2);
      const auto len = le_at(cd, x + 2, 2);
      TORCH_CHECK(
          x + 4 + len <= p + 46 + name_len + extra_len,
          "zip: extra field runs past its entry");
      if (id == 1) {
        size_t f = x + 4;
        const size_t end = x + 4 + len;
        for (uint64_t* v : {&uncomp, &comp, &local}) {
          if (*v == 0xffffffff) {
            TORCH_CHECK(f + 8 <= end, "zip: short zip64 extra field");
            *v = le_at(cd, f, 8);
            f += 8;
          }
        }
      }
      x += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;
    TORCH_CHECK(!(flags & 1), "zip: record '", r.name, "' is encrypted");
    TORCH_CHECK(
        method == 0 || method == 8,
        "zip: record '",
        r.name,
        "' uses compression method ",
        method);
    const auto header = read_at(in, local, 30);
    TORCH_CHECK(
        le_at(header, 0, 4) == 0x04034b50,
        "zip: bad local header for '",
        r.name,
        "'");
    r.data_offset = local + 30 + le_at(header, 26, 2) + le_at(header, 28, 2);
    TORCH_CHECK(
        r.data_offset <= size && comp <= size - r.data_offset,
        "zip: record '",
        r.name,
        "' of ",
        comp,
        " bytes runs past the end of the file");
    r.stored = method == 0;
    TORCH_CHECK(
        r.stored ? uncomp == comp : uncomp <= comp * 1032 + 1024,
        "zip: record '",
        r.name,
        "' declares ",
        uncomp,
        " bytes from ",
        comp);
    r.size = uncomp;
    out.push_back(std::move(r));
  }
  return out;
}

/// A bounds-checked view of bytes in memory for PyTorchStreamReader.
class MemoryReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  MemoryReader(const char* data, size_t size) : data_(data), size_(size) {}
  size_t size() const override {
    return size_;
  }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/ = "")
      const override {
    if (pos >= size_) {
      return 0;
    }
    n = std::min<size_t>(n, size_ - pos);
    std::memcpy(buf, data_ + pos, n);
    return n;
  }

 private:
  const char* data_;
  size_t size_;
};

/// Reads the root object of a torch.save zip archive behind `in`.
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

/// Reads the root object of a torch.save zip archive behind `in`. With
/// `mapped` (the same file, mapped), the stored (uncompressed) records'
/// tensors view the mapping instead of being copied.
inline PyValue read_torch_zip(
    std::shared_ptr<caffe2::serialize::ReadAdapterInterface> in,
    std::shared_ptr<const MappedFile> mapped = nullptr) {
  const auto records = zip_records(*in);
  TORCH_CHECK(!records.empty(), "zip: the archive is empty");
  // PyTorchStreamReader names records relative to the folder of the first.
  const auto slash = records.front().name.find('/');
  TORCH_CHECK(
      slash != std::string::npos,
      "zip: the first record is not in a folder: '",
      records.front().name,
      "'");
  const std::string prefix = records.front().name.substr(0, slash + 1);
  std::unordered_map<std::string, const ZipRecord*> by_name;
  for (const auto& r : records) {
    if (r.name.compare(0, prefix.size(), prefix) == 0) {
      by_name.emplace(r.name.substr(prefix.size()), &r);
    }
  }
  TORCH_CHECK(
      by_name.count("data.pkl"),
      "the zip archive holds no data.pkl (not written by torch.save)");
  caffe2::serialize::PyTorchStreamReader reader(in);

  auto record = [&](const std::string& name) {
    auto data = reader.getRecord(name);
    return std::make_pair(std::move(std::get<0>(data)), std::get<1>(data));
  };
  bool big_endian = false;
  if (by_name.count("byteorder")) {
    TORCH_CHECK(
        by_name.at("byteorder")->size <= 16, "zip: byteorder record too long");
    auto bo = record("byteorder");
    const std::string order(
        static_cast<const char*>(bo.first.get()), bo.second);
    TORCH_CHECK(
        order == "little" || order == "big", "unknown byteorder '", order, "'");
    big_endian = order == "big";
  }

  std::unordered_map<std::string, c10::Storage> loaded;
  auto persistent_load = [&](Unpickler& u, const PyValue& pid) -> PyValue {
    TORCH_CHECK(
        pid.is(PyKind::Tuple) && pid.size() == 5 && pid[0].is_string() &&
            pid[0].as_string() == "storage" && pid[2].is_string() &&
            pid[4].is(PyKind::Int),
        "unknown persistent id ",
        pid.repr(120));
    const auto dtype = storage_dtype(pid[1]);
    TORCH_CHECK(dtype, "unsupported storage type ", pid[1].repr(60));
    const std::string& key = pid[2].as_string();
    const int64_t nbytes = checked_mul(
        pid[4].as_int(),
        static_cast<int64_t>(c10::elementSize(*dtype)),
        "storage size");
    auto it = loaded.find(key);
    if (it == loaded.end()) {
      const std::string name = "data/" + key;
      const auto r = by_name.find(name);
      TORCH_CHECK(r != by_name.end(), "zip: no record '", name, "'");
      TORCH_CHECK(
          r->second->size == static_cast<uint64_t>(nbytes),
          "zip: record '",
          name,
          "' has ",
          r->second->size,
          " bytes, its storage needs ",
          nbytes);
      c10::Storage storage;
      if (mapped && r->second->stored && nbytes > 0) {
        storage = mapped_storage(
            mapped, r->second->data_offset, static_cast<size_t>(nbytes));
        if (big_endian) {
          swap_bytes(storage.data_ptr().get(), storage.nbytes(), *dtype);
        }
      } else {
        auto data = record(name);
        TORCH_CHECK(
            data.second == static_cast<size_t>(nbytes),
            "zip: record '",
            name,
            "' read short");
        if (big_endian) {
          swap_bytes(data.first.get(), data.second, *dtype);
        }
        storage = c10::Storage(
            c10::Storage::use_byte_size_t(),
            static_cast<size_t>(nbytes),
            std::move(data.first),
            /*allocator=*/nullptr,
            /*resizable=*/false);
      }
      it = loaded.emplace(key, std::move(storage)).first;
    }
    TORCH_CHECK(
        static_cast<int64_t>(it->second.nbytes()) == nbytes,
        "storage '",
        key,
        "' is used with ",
        nbytes,
        " and ",
        it->second.nbytes(),
        " bytes");
    return u.make_storage({it->second, *dtype, 0, nbytes});
  };
  auto pkl = record("data.pkl");
  return Unpickler(
             static_cast<const char*>(pkl.first.get()),
             pkl.second,
             persistent_load,
             torch_call)
      .parse();
}

// ---- the legacy container --------------------------------------------------

inline const std::string& legacy_magic() {
  // 0x1950a86a20f9469cfc6c as pickle's LONG1 writes it, little-endian.
  static const std::string magic(
      "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  return magic;
}

/// Reads the root object of a legacy torch.save stream from memory.
inline PyValue read_torch_legacy(const char* data, size_t size) {
  size_t pos = 0;
  auto next = [&](Unpickler::PersistentLoad pl, Unpickler::CallHook hook) {
    Unpickler u(data + pos, size - pos, std::move(pl), std::move(hook));
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
      at::DataPtr ptr =
          c10::GetCPUAllocator()->allocate(static_cast<size_t>(nbytes));
      c10::Storage storage(
          c10::Storage::use_byte_size_t(),
          static_cast<size_t>(nbytes),
          std::move(ptr),
          /*allocator=*/nullptr,
          /*resizable=*/false);
      it = roots.emplace(key, Root{std::move(storage), *dtype}).first;
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
  if (size < 4 || std::memcmp(data, "PK\x03\x04", 4) != 0) {
    return false;
  }
  try {
    MemoryReader in(data, size);
    for (const auto& r : zip_records(in)) {
      const auto slash = r.name.find('/');
      if (slash != std::string::npos && r.name.substr(slash) == "/data.pkl") {
        return true;
      }
    }
  } catch (const std::exception&) {
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

/// The root object of torch.save data in memory (zip or legacy); tensors on
/// the CPU. The tensors own copies of their bytes.
inline PyValue read_torch_save_bytes(const char* data, size_t size) {
  return with_c10_errors([&] {
    if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) {
      return read_torch_zip(std::make_shared<MemoryReader>(data, size));
    }
    TORCH_CHECK(
        looks_like_torch_legacy(data, size),
        "not a torch.save file (neither a zip archive nor the legacy format)");
    return read_torch_legacy(data, size);
  });
}

/// The root object of the torch.save file at `path`. A zip archive is read
/// record by record, each storage's bytes straight into its tensor memory;
/// a legacy file is read whole first.
///
/// With `mapped`, the file is mapped into memory and the tensors of a zip
/// archive's stored records view the mapping (copy-on-write) instead of
/// owning copies: for a load that copies them at once (a file truncated by
/// someone else while they live would fault). A legacy file is always read
/// through the mapping, its storages copied out.
inline PyValue read_torch_save(const std::string& path, bool mapped = false) {
  char head[4] = {0, 0, 0, 0};
  {
    std::ifstream f(path, std::ios::binary);
    TORCH_CHECK(f, "cannot open '", path, "' for reading");
    f.read(head, 4);
  }
  if (std::memcmp(head, "PK\x03\x04", 4) == 0) {
    return with_c10_errors([&] {
      if (mapped) {
        auto file = MappedFile::open(path);
        return read_torch_zip(
            std::make_shared<MemoryReader>(file->data(), file->size()), file);
      }
      return read_torch_zip(
          std::make_shared<caffe2::serialize::FileAdapter>(path));
    });
  }
  const auto file = MappedFile::open(path);
  return read_torch_save_bytes(file->data(), file->size());
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
