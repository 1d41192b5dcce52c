#pragma once

// The safetensors format without tensors: the dtype table, reading and
// checking a header, and writing one. See <resnet/io/safetensors.h>.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
// ..., "__metadata__": {str: str}}, then the tensors' bytes: C order,
// little-endian, offsets relative to the end of the header, covering the
// rest of the file with neither holes nor overlaps.

#include <resnet/config.h>
#include <resnet/io/detail/read_budget.h>
#include <resnet/io/detail/safetensors_dtypes.h>

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace resnet {
namespace detail {

/// A tensor's entry in a checked header.
struct SafetensorsEntry {
  std::string name;
  const SafetensorsDtype* dtype = nullptr;
  /// The shape of the LibTorch tensor (for F4, the header's last dimension
  /// halved).
  std::vector<int64_t> sizes;
  /// Byte range relative to the start of the data.
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// A checked header: the entries in file order, and the metadata.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
};

/// The little-endian uint64 at `p`.
inline uint64_t read_le64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  }
  return v;
}

/// The header length stored in the first 8 bytes of a file of `file_size`
/// bytes, checked against the file and the 100 MB cap.
inline uint64_t safetensors_header_length(
    const char* first8,
    uint64_t file_size) {
  TORCH_CHECK(
      file_size >= kSafetensorsLengthBytes,
      "the file is ",
      file_size,
      " bytes long, too short for the 8-byte header length");
  const uint64_t n = read_le64(first8);
  TORCH_CHECK(
      n <= kSafetensorsMaxHeader,
      "the header length ",
      n,
      " is over the limit of ",
      kSafetensorsMaxHeader,
      " bytes");
  TORCH_CHECK(
      n <= file_size - kSafetensorsLengthBytes,
      "the header length ",
      n,
      " runs past the end of the ",
      file_size,
      "-byte file");
  return n;
}

/// `text` cut to at most `limit` bytes, for error messages.
inline std::string clipped(const std::string& text, size_t limit = 200) {
  return text.size() <= limit ? text : text.substr(0, limit) + "...";
}

/// Builds the header from nlohmann's SAX events: the top-level entries in
/// file order, each value a small JSON tree. Nesting deeper than the format
/// (`{"name": {"shape": [...]}}`) and duplicate keys are refused as they
/// come, so a hostile header can neither build a deep tree nor hide a
/// second entry; every value is charged to the read's budget. (nlohmann's
/// own callback parser scans the parent object at the end of each child
/// object, which takes quadratic time over a header of many entries.)
class SafetensorsHeaderSax final : public nlohmann::json_sax<nlohmann::json> {
 public:
  using Json = nlohmann::json;
  /// What one value takes (a JSON value, a map node, the set of keys).
  static constexpr uint64_t kValueBytes = 128;

  explicit SafetensorsHeaderSax(ReadBudget& budget) : budget_(budget) {}

  /// The top-level entries in file order.
  std::vector<std::pair<std::string, Json>> entries;
  /// Why the parse stopped, if it did.
  std::string error;
  /// The root was something other than an object (error names it).
  bool not_object = false;

  bool null() override {
    return value(Json(nullptr));
  }
  bool boolean(bool v) override {
    return value(Json(v));
  }
  bool number_integer(number_integer_t v) override {
    return value(Json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    return value(Json(v));
  }
  bool number_float(number_float_t v, const string_t& /*text*/) override {
    return value(Json(v));
  }
  bool string(string_t& v) override {
    budget_.spend(v.size(), "the header's strings");
    return value(Json(std::move(v)));
  }
  bool binary(binary_t& /*v*/) override {
    return value(Json());
  }
  bool start_object(std::size_t /*elements*/) override {
    keys_.emplace_back();
    return open(Json::object());
  }
  bool start_array(std::size_t /*elements*/) override {
    return open(Json::array());
  }
  bool key(string_t& k) override {
    budget_.spend(2 * k.size() + kValueBytes, "the header's keys");
    TORCH_CHECK(
        keys_.back().insert(k).second,
        "the header has the key '",
        clipped(k),
        "' twice");
    key_ = k;
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    return close();
  }
  bool end_array() override {
    return close();
  }
  bool parse_error(
      std::size_t /*position*/,
      const std::string& /*token*/,
      const nlohmann::detail::exception& e) override {
    error = e.what();
    return false;
  }

 private:
  // depth_ counts the open containers, the root object included.
  bool open(Json container) {
    budget_.spend(kValueBytes, "the header's values");
    // The format nests at most {"name": {"shape": [...]}}.
    TORCH_CHECK(depth_ < 3, "the header nests deeper than the format allows");
    if (depth_ == 0) {
      if (!container.is_object()) {
        not_object = true;
        error = "the header is not a JSON object";
        return false;
      }
    } else {
      add(std::move(container));
    }
    ++depth_;
    return true;
  }
  bool close() {
    --depth_;
    if (depth_ >= 1 && !stack_.empty()) {
      stack_.pop_back();
    }
    return true;
  }
  bool value(Json v) {
    budget_.spend(kValueBytes, "the header's values");
    if (depth_ == 0) {
      not_object = true;
      error = "the header is not a JSON object";
      return false;
    }
    add(std::move(v));
    return true;
  }
  // Puts `v` in the innermost open container (or as a top-level entry),
  // and opens it if it is one.
  void add(Json v) {
    const bool container = v.is_structured();
    Json* at = nullptr;
    if (depth_ == 1) {
      entries.emplace_back(key_, std::move(v));
      at = &entries.back().second;
    } else {
      Json& parent = *stack_.back();
      if (parent.is_object()) {
        at = &(parent[key_] = std::move(v));
      } else {
        parent.push_back(std::move(v));
        at = &parent.back();
      }
    }
    if (container) {
      stack_.push_back(at);
    }
  }

  ReadBudget& budget_;
  int depth_ = 0;
  std::string key_;
  std::vector<Json*> stack_;
  std::vector<std::unordered_set<std::string>> keys_;
};

/// `value` as a non-negative integer; `what` names it in the error.
inline uint64_t header_uint(
    const nlohmann::json& value,
    const std::string& what) {
  TORCH_CHECK(
      !value.is_number_integer() || value.is_number_unsigned(),
      what,
      " is negative: ",
      clipped(value.dump()));
  TORCH_CHECK(
      value.is_number_unsigned(),
      what,
      " is not a non-negative integer: ",
      clipped(value.dump()));
  return value.get<uint64_t>();
}

/// One tensor's entry, with the shape, dtype and size checked against each
/// other; offsets are checked against the others by the caller.
inline SafetensorsEntry parse_header_entry(
    const std::string& name,
    const nlohmann::json& info,
    uint64_t data_size) {
  const std::string what = "tensor '" + clipped(name) + "'";
  TORCH_CHECK(
      info.is_object(),
      what,
      ": expected an object with dtype, shape and data_offsets, got ",
      clipped(info.dump()));
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    TORCH_CHECK(info.contains(field), what, " has no '", field, "'");
  }
  const auto& dtype = info["dtype"];
  const auto& shape = info["shape"];
  const auto& offsets = info["data_offsets"];
  TORCH_CHECK(
      dtype.is_string(),
      what,
      ": dtype is not a string: ",
      clipped(dtype.dump()));
  TORCH_CHECK(
      shape.is_array(), what, ": shape is not a list: ", clipped(shape.dump()));
  TORCH_CHECK(
      shape.size() <= kSafetensorsMaxDims,
      what,
      ": a shape of ",
      shape.size(),
      " dimensions, more than ",
      kSafetensorsMaxDims);
  TORCH_CHECK(
      offsets.is_array() && offsets.size() == 2,
      what,
      ": data_offsets is not a list [begin, end]: ",
      clipped(offsets.dump()));

  SafetensorsEntry entry;
  entry.name = name;
  const auto& dtype_name = dtype.get_ref<const std::string&>();
  entry.dtype = safetensors_dtype(dtype_name);
  TORCH_CHECK(
      entry.dtype,
      what,
      ": ",
      is_safetensors_dtype_name(dtype_name) ? "this LibTorch (" TORCH_VERSION
                                              ") has no type for dtype '"
                                            : "unknown dtype '",
      clipped(dtype_name),
      "'");

  // Elements and bits, with every product checked for overflow.
  constexpr uint64_t kMaxDim =
      static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t numel = 1;
  bool overflow = false;
  const std::string dim_what = what + ": a dimension of the shape";
  for (const auto& dim : shape) {
    const uint64_t d = header_uint(dim, dim_what);
    overflow = overflow || d > kMaxDim;
    if (!overflow && d != 0 && numel > kMaxDim / d) {
      overflow = true;
    }
    numel *= overflow ? 1 : d;
    entry.sizes.push_back(static_cast<int64_t>(overflow ? 0 : d));
  }
  const uint64_t bits = static_cast<uint64_t>(entry.dtype->bits);
  TORCH_CHECK(
      !overflow && numel <= std::numeric_limits<uint64_t>::max() / bits,
      what,
      ": the shape ",
      clipped(shape.dump()),
      " is too large");
  TORCH_CHECK(
      numel * bits % 8 == 0,
      what,
      ": ",
      numel,
      " elements of ",
      entry.dtype->name,
      " do not fill whole bytes");
  if (entry.dtype->bits == 4) {
    TORCH_CHECK(
        !entry.sizes.empty() && entry.sizes.back() % 2 == 0,
        what,
        ": an F4 tensor needs an even last dimension, got shape ",
        clipped(shape.dump()));
    entry.sizes.back() /= 2;
  }
  const uint64_t nbytes = numel * bits / 8;

  entry.begin = header_uint(offsets[0], what + ": data_offsets[0]");
  entry.end = header_uint(offsets[1], what + ": data_offsets[1]");
  TORCH_CHECK(
      entry.begin <= entry.end,
      what,
      ": data_offsets [",
      entry.begin,
      ", ",
      entry.end,
      "] end before they begin");
  TORCH_CHECK(
      entry.end <= data_size,
      what,
      ": data_offsets [",
      entry.begin,
      ", ",
      entry.end,
      "] reach past the ",
      data_size,
      " bytes of data");
  TORCH_CHECK(
      entry.end - entry.begin == nbytes,
      what,
      ": data_offsets [",
      entry.begin,
      ", ",
      entry.end,
      "] hold ",
      entry.end - entry.begin,
      " bytes, but ",
      entry.dtype->name,
      " of shape ",
      clipped(shape.dump()),
      " takes ",
      nbytes);
  return entry;
}

/// The checked header of a file whose `n`-byte header is at `json`, followed
/// by `data_size` bytes of data. The entries come in file order (by offset;
/// entries at the same offset, which are empty, in header order), and must
/// cover the data exactly, as the reference implementation requires.
inline SafetensorsHeader parse_safetensors_header(
    const char* json,
    size_t n,
    uint64_t data_size,
    ReadBudget* budget = nullptr) {
  ReadBudget own(kSafetensorsLengthBytes + n + data_size);
  SafetensorsHeaderSax sax(budget ? *budget : own);
  const bool parsed = nlohmann::json::sax_parse(json, json + n, &sax);
  TORCH_CHECK(
      parsed && sax.error.empty(),
      sax.not_object ? sax.error
                     : "the header is not valid JSON: " + clipped(sax.error));
  SafetensorsHeader header;
  header.tensors.reserve(sax.entries.size());
  for (const auto& [key, value] : sax.entries) {
    if (key != kSafetensorsMetadataKey) {
      header.tensors.push_back(parse_header_entry(key, value, data_size));
      continue;
    }
    const auto& meta = value;
    if (meta.is_null()) {
      continue;
    }
    TORCH_CHECK(
        meta.is_object(),
        "__metadata__ is not an object: ",
        clipped(meta.dump()));
    for (const auto& m : meta.items()) {
      TORCH_CHECK(
          m.value().is_string(),
          "__metadata__['",
          clipped(m.key()),
          "'] is not a string: ",
          clipped(m.value().dump()));
      header.metadata.emplace(m.key(), m.value().get<std::string>());
    }
  }

  auto& tensors = header.tensors;
  std::stable_sort(
      tensors.begin(),
      tensors.end(),
      [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
        return std::make_pair(a.begin, a.end) < std::make_pair(b.begin, b.end);
      });
  uint64_t covered = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    TORCH_CHECK(
        t.begin >= covered,
        "tensor '",
        clipped(t.name),
        "' at bytes [",
        t.begin,
        ", ",
        t.end,
        ") overlaps tensor '",
        clipped(tensors[i - 1].name),
        "' at [",
        tensors[i - 1].begin,
        ", ",
        tensors[i - 1].end,
        ")");
    TORCH_CHECK(
        t.begin == covered,
        "bytes [",
        covered,
        ", ",
        t.begin,
        ") before tensor '",
        clipped(t.name),
        "' belong to no tensor");
    covered = t.end;
  }
  TORCH_CHECK(
      covered == data_size,
      "the tensors cover ",
      covered,
      " bytes, but the file holds ",
      data_size,
      " bytes of data after the header");
  return header;
}

/// Whether `size` bytes at `data`, a whole file, start like a safetensors
/// file: a header length that fits the file and the cap, and a header that
/// begins with '{' and ends with '}' (before any padding spaces). The JSON
/// itself is not parsed.
inline bool looks_like_safetensors(const char* data, size_t size) {
  if (data == nullptr || size < kSafetensorsLengthBytes + 2) {
    return false;
  }
  const uint64_t n = read_le64(data);
  if (n < 2 || n > kSafetensorsMaxHeader ||
      n > size - kSafetensorsLengthBytes) {
    return false;
  }
  const char* json = data + kSafetensorsLengthBytes;
  size_t last = static_cast<size_t>(n) - 1;
  while (last > 0 && json[last] == ' ') {
    --last;
  }
  return json[0] == '{' && json[last] == '}';
}

/// The LibTorch shape of an entry as the header records it (for F4, the
/// last dimension doubled: the header counts elements, not bytes).
inline std::vector<int64_t> header_shape(const SafetensorsEntry& entry) {
  auto shape = entry.sizes;
  if (entry.dtype->bits == 4 && !shape.empty()) {
    shape.back() *= 2;
  }
  return shape;
}

/// The header a writer puts before data laid out as `entries` say (in that
/// order): compact JSON, "__metadata__" first when there is any, padded with
/// spaces to a multiple of 8 bytes as the reference writer does.
inline std::string safetensors_header_text(
    const std::vector<SafetensorsEntry>& entries,
    const std::map<std::string, std::string>& metadata) {
  using Json = nlohmann::ordered_json;
  Json root = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& m : metadata) {
      meta[m.first] = m.second;
    }
    root[kSafetensorsMetadataKey] = std::move(meta);
  }
  for (const auto& entry : entries) {
    Json info = Json::object();
    info["dtype"] = entry.dtype->name;
    info["shape"] = header_shape(entry);
    info["data_offsets"] = {entry.begin, entry.end};
    root[entry.name] = std::move(info);
  }
  std::string text;
  try {
    text = root.dump();
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(
        false,
        "a tensor name or metadata string is not valid UTF-8 (",
        e.what(),
        ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  TORCH_CHECK(
      text.size() <= kSafetensorsMaxHeader,
      "the header would be ",
      text.size(),
      " bytes, over the limit of ",
      kSafetensorsMaxHeader);
  return text;
}

} // namespace detail
} // namespace resnet
