#pragma once

// Reading the weight files that exist: torch.save files (zip or the legacy
// format, a bare state dict or a training checkpoint holding one),
// safetensors, and TorchScript archives. The format is told by the file's
// content, never by its name; the state dict is found inside checkpoints by
// the names training scripts give it.

#include <resnet/detail/mapped_file.h>
#include <resnet/detail/pickle.h>
#include <resnet/detail/torch_save.h>
#include <resnet/io.h>
#include <resnet/safetensors.h>

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

/// The formats `read_state_dict` tells apart.
enum class CheckpointFormat {
  /// `torch.save`'s zip archive (PyTorch >= 1.6, and `save_state_dict`).
  TorchSave,
  /// `torch.save`'s legacy format (before 1.6, or
  /// `_use_new_zipfile_serialization=False`).
  TorchSaveLegacy,
  /// Hugging Face's safetensors (timm's `model.safetensors`).
  Safetensors,
  /// A TorchScript archive: `torch.jit.save`, LibTorch's `torch::save`.
  TorchScript,
};

inline const char* format_name(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::TorchSave:
      return "torch.save (zip)";
    case CheckpointFormat::TorchSaveLegacy:
      return "torch.save (legacy format)";
    case CheckpointFormat::Safetensors:
      return "safetensors";
    case CheckpointFormat::TorchScript:
      return "TorchScript";
  }
  return "?";
}

/// One entry of a checkpoint, as `inspect_checkpoint` lists it.
struct CheckpointEntry {
  /// Where it sits: dict keys joined by '/', e.g. "model/fc.weight" or
  /// "epoch".
  std::string path;
  /// "tensor", or the Python type of anything else ("int", "float", "str",
  /// "dict", "list", "argparse.Namespace object", ...).
  std::string kind;
  /// Tensors: dtype and shape.
  std::string dtype;
  std::vector<int64_t> shape;
  /// Other values: a short rendering ("93.1", "'resnet50'", ...).
  std::string value;
};

/// What a checkpoint file holds.
struct CheckpointInfo {
  CheckpointFormat format = CheckpointFormat::TorchSave;
  /// Every tensor and every other leaf, in file order (dicts are walked;
  /// containers that hold no tensor are shown as one entry).
  std::vector<CheckpointEntry> entries;
  /// The entry `read_state_dict` takes the state dict from ("" for the file
  /// itself), or empty with `state_error` set when none is found.
  std::string state_entry;
  /// Number of tensors of that state dict.
  size_t state_tensors = 0;
  /// Why no state dict was found (empty when one was).
  std::string state_error;
  /// safetensors' `__metadata__`.
  std::map<std::string, std::string> metadata;
};

namespace detail {

/// The names under which training scripts keep the weights, most likely
/// first: plain state dicts, then EMA copies.
inline const std::vector<std::string>& state_dict_keys() {
  static const std::vector<std::string> keys = {
      "state_dict",
      "model_state_dict",
      "model",
      "net",
      "network",
      "module",
      "model_state",
      "weights",
      "params",
      "state_dict_ema",
      "model_ema",
      "ema_state_dict",
      "ema",
  };
  return keys;
}

/// A value as Python would see it: LibTorch's pickler (torch::pickle_save)
/// wraps dicts and lists in `torch.jit._pickle.restore_type_tag(value,
/// type)`, which Python resolves to `value`.
inline PyValue untagged(const PyValue& v) {
  if (v.is(PyKind::Object) &&
      v.qualified_name() == "torch.jit._pickle.restore_type_tag") {
    const auto args = v.args();
    if (args.is(PyKind::Tuple) && args.size() >= 1) {
      return args[0];
    }
  }
  return v;
}

/// A whole pickled `torch.nn.Module` (torch.save(model)): an object whose
/// state has `_parameters`, `_buffers` and `_modules`.
inline bool is_pickled_module(const PyValue& v) {
  if (!v.is(PyKind::Object)) {
    return false;
  }
  const auto state = v.state();
  return state.is_dict() && state.contains("_parameters") &&
      state.contains("_modules");
}

/// The parameters and buffers of a pickled module in state_dict order
/// (non-persistent buffers left out), without running any of its code.
inline void flatten_pickled_module(
    const PyValue& module,
    const std::string& prefix,
    StateDict& out,
    int depth) {
  TORCH_CHECK(depth < 200, "modules nested too deeply");
  const auto state = module.state();
  std::set<std::string> transient;
  const auto non_persistent = state.get("_non_persistent_buffers_set");
  if (non_persistent.is_sequence()) {
    for (const auto& name : non_persistent.elements()) {
      if (name.is_string()) {
        transient.insert(name.as_string());
      }
    }
  }
  for (const char* field : {"_parameters", "_buffers"}) {
    const auto tensors = state.get(field);
    if (!tensors.is_dict()) {
      continue;
    }
    for (const auto& item : tensors.as_dict()) {
      if (item.first.is_string() && item.second.is_tensor() &&
          !transient.count(item.first.as_string())) {
        out.emplace_back(
            prefix + item.first.as_string(), item.second.as_tensor());
      }
    }
  }
  const auto children = state.get("_modules");
  if (children.is_dict()) {
    for (const auto& item : children.as_dict()) {
      if (item.first.is_string() && is_pickled_module(item.second)) {
        flatten_pickled_module(
            item.second, prefix + item.first.as_string() + ".", out, depth + 1);
      }
    }
  }
}

/// `v` as a state dict: a dict of name -> tensor (an OrderedDict from
/// `model.state_dict()` or a plain dict), or a whole pickled module. Empty
/// when `v` is neither.
inline bool as_state_dict(const PyValue& tagged, StateDict& out) {
  const PyValue v = untagged(tagged);
  out.clear();
  if (is_pickled_module(v)) {
    flatten_pickled_module(v, "", out, 0);
    return !out.empty();
  }
  if (!v.is_dict() || v.size() == 0) {
    return false;
  }
  for (const auto& item : v.as_dict()) {
    if (!item.first.is_string() || !item.second.is_tensor()) {
      out.clear();
      return false;
    }
    out.emplace_back(item.first.as_string(), item.second.as_tensor());
  }
  return true;
}

/// A short description of a value for error messages and listings.
inline std::string describe_kind(const PyValue& tagged) {
  const PyValue v = untagged(tagged);
  if (v.is(PyKind::Object) || v.is(PyKind::Global)) {
    return v.qualified_name() +
        (v.is(PyKind::Object) ? " object" : " (a class or function)");
  }
  if (v.is_dict() && v.is_ordered_dict()) {
    return "OrderedDict";
  }
  return v.kind_name();
}

/// The entries of a dict-like value: a dict's string-keyed pairs, or an
/// object's attributes (its BUILD state).
inline std::vector<std::pair<std::string, PyValue>> named_children(
    const PyValue& tagged) {
  const PyValue v = untagged(tagged);
  std::vector<std::pair<std::string, PyValue>> out;
  PyValue dict = v;
  if (v.is(PyKind::Object)) {
    dict = v.state();
  }
  if (!dict.is_dict()) {
    return out;
  }
  for (const auto& item : dict.as_dict()) {
    if (item.first.is_string()) {
      out.emplace_back(item.first.as_string(), item.second);
    } else if (item.first.is(PyKind::Int)) {
      out.emplace_back(std::to_string(item.first.as_int()), item.second);
    }
  }
  return out;
}

inline std::string entry_list(const PyValue& root) {
  std::string out;
  size_t shown = 0;
  const auto children = named_children(root);
  for (const auto& item : children) {
    if (shown == 12) {
      out += ", ... and " + std::to_string(children.size() - shown) + " more";
      break;
    }
    out += (shown++ ? ", " : "") + ("'" + item.first + "' (") +
        describe_kind(item.second) + ")";
  }
  return out.empty() ? "none" : out;
}

/// Finds the state dict in a checkpoint tree. `entry` (keys joined by '/')
/// names it; empty means: the file itself if it is one, else the first of
/// `state_dict_keys()` that holds one (also one level further down, as in
/// {"model": {"state_dict": ...}}), else the only dict of tensors among the
/// entries. Returns the path taken.
inline std::string
find_state_dict(const PyValue& root, const std::string& entry, StateDict& out) {
  if (!entry.empty()) {
    PyValue at = root;
    std::string walked;
    size_t start = 0;
    while (start <= entry.size()) {
      const auto end = std::min(entry.find('/', start), entry.size());
      const std::string key = entry.substr(start, end - start);
      bool found = false;
      for (const auto& item : named_children(at)) {
        if (item.first == key) {
          at = item.second;
          found = true;
          break;
        }
      }
      TORCH_CHECK(
          found,
          "no entry '",
          key,
          "' in ",
          walked.empty() ? "the file" : "'" + walked + "'",
          "; its entries: ",
          entry_list(at));
      walked += (walked.empty() ? "" : "/") + key;
      start = end + 1;
    }
    TORCH_CHECK(
        as_state_dict(at, out),
        "entry '",
        entry,
        "' is a ",
        describe_kind(at),
        ", not a dict of name -> tensor");
    return entry;
  }

  if (as_state_dict(root, out)) {
    return "";
  }
  const auto children = named_children(root);
  for (const auto& key : state_dict_keys()) {
    for (const auto& item : children) {
      if (item.first != key) {
        continue;
      }
      if (as_state_dict(item.second, out)) {
        return key;
      }
      for (const auto& inner : named_children(item.second)) {
        for (const auto& inner_key : state_dict_keys()) {
          if (inner.first == inner_key && as_state_dict(inner.second, out)) {
            return key + "/" + inner_key;
          }
        }
      }
    }
  }
  std::vector<std::string> candidates;
  StateDict first;
  for (const auto& item : children) {
    StateDict found;
    if (as_state_dict(item.second, found)) {
      candidates.push_back(item.first);
      if (candidates.size() == 1) {
        first = std::move(found);
      }
    }
  }
  if (candidates.size() == 1) {
    out = std::move(first);
    return candidates.front();
  }
  if (candidates.size() > 1) {
    std::string names;
    for (const auto& c : candidates) {
      names += (names.empty() ? "'" : ", '") + c + "'";
    }
    TORCH_CHECK(
        false,
        "several entries hold a state dict (",
        names,
        "); choose one with LoadOptions().entry(name)");
  }
  std::string opaque;
  for (const auto& item : children) {
    if (item.second.is(PyKind::Object)) {
      opaque += (opaque.empty() ? "" : ", ") + item.second.qualified_name();
    }
  }
  TORCH_CHECK(
      false,
      "found no state dict (a dict of name -> tensor) in this ",
      root.is_dict()                ? "dict"
          : root.is(PyKind::Object) ? root.qualified_name() + " object"
                                    : std::string(root.kind_name()),
      "; its entries: ",
      entry_list(root),
      opaque.empty() ? ""
                     : std::string("; objects of types not read (") + opaque +
              ") may hold tensors",
      ". Name the entry with LoadOptions().entry(\"name\") (nested: "
      "\"outer/inner\")");
}

/// The first bytes of a file, enough to tell the formats apart, and its
/// size.
inline std::string
file_head(const std::string& path, size_t n, uint64_t& size) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot open it for reading");
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  TORCH_CHECK(end >= 0, "cannot read it (not a regular file?)");
  size = static_cast<uint64_t>(end);
  in.seekg(0, std::ios::beg);
  std::string head(n, '\0');
  in.read(&head[0], static_cast<std::streamsize>(n));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

/// A safetensors file starts with the little-endian length of its JSON
/// header, which fits in the file, and the header starts with '{'.
inline bool safetensors_signature(const std::string& head, uint64_t size) {
  if (head.size() < 10 || size < 10) {
    return false;
  }
  const uint64_t n = read_le64(head.data());
  return n >= 2 && n <= kSafetensorsMaxHeader && n <= size - 8 &&
      head[8] == '{';
}

/// What a file that is not a checkpoint seems to be, for the error.
inline std::string guess_foreign(const std::string& head) {
  const auto has = [&](const char* magic, size_t n) {
    return head.size() >= n && std::memcmp(head.data(), magic, n) == 0;
  };
  if (head.empty()) {
    return "the file is empty";
  }
  if (has("PK\x03\x04", 4) || has("PK\x05\x06", 4)) {
    return "a zip archive without the records torch.save writes (no "
           "data.pkl): not a PyTorch checkpoint";
  }
  if (has("\x89HDF\r\n\x1a\n", 8)) {
    return "an HDF5 file (Keras/TensorFlow weights?), not a PyTorch "
           "checkpoint";
  }
  if (has("\x93NUMPY", 6)) {
    return "a NumPy .npy array, not a PyTorch checkpoint";
  }
  if (has("\x1f\x8b", 2)) {
    return "a gzip-compressed file; decompress it first";
  }
  if (has("\x80\x02\x8a\x0a", 4)) {
    return "torch.save's legacy format by its first bytes, but its magic "
           "number is not intact: the file is truncated or damaged";
  }
  if (has("\x80", 1) && head.size() >= 2) {
    return "a Python pickle (protocol " +
        std::to_string(static_cast<unsigned char>(head[1])) +
        ") but not one written by torch.save";
  }
  if (has("\x08", 1) || has("ONNX", 4)) {
    return "not a PyTorch checkpoint (an ONNX or other protobuf file?)";
  }
  return "not a PyTorch checkpoint: expected torch.save's zip archive or "
         "legacy format, a safetensors file or a TorchScript archive";
}

/// Tells the format of the file at `path` by its content.
inline CheckpointFormat detect_format(const std::string& path) {
  uint64_t size = 0;
  const std::string head = file_head(path, 64, size);
  if (safetensors_signature(head, size)) {
    return CheckpointFormat::Safetensors;
  }
  if (looks_like_torch_legacy(head.data(), head.size())) {
    return CheckpointFormat::TorchSaveLegacy;
  }
  if (head.size() >= 4 && std::memcmp(head.data(), "PK\x03\x04", 4) == 0) {
    bool data = false;
    bool script = false;
    try {
      caffe2::serialize::PyTorchStreamReader reader(path);
      data = reader.hasRecord("data.pkl");
      script = reader.hasRecord("constants.pkl");
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false,
          "a zip archive that cannot be read (truncated or damaged?): ",
          e.what());
    }
    if (script) {
      return CheckpointFormat::TorchScript;
    }
    if (data) {
      return CheckpointFormat::TorchSave;
    }
  }
  TORCH_CHECK(false, guess_foreign(head));
}

/// The tensors of a safetensors file as views of the mapped file: nothing
/// is copied until they are used. For a load that copies them into a model
/// at once; a file truncated by someone else while they live would fault.
inline SafetensorsFile map_safetensors(const std::string& path) {
  check_little_endian_host();
  const auto file = MappedFile::open(path);
  const uint64_t n = safetensors_header_length(file->data(), file->size());
  const uint64_t data_start = kSafetensorsLengthBytes + n;
  const auto header = parse_safetensors_header(
      file->data() + kSafetensorsLengthBytes,
      static_cast<size_t>(n),
      file->size() - data_start);
  SafetensorsFile out;
  out.metadata = header.metadata;
  out.tensors.reserve(header.tensors.size());
  for (const auto& entry : header.tensors) {
    out.tensors.emplace_back(
        entry.name,
        MappedFile::view(
            file,
            data_start + entry.begin,
            entry.end - entry.begin,
            entry.sizes,
            entry.dtype->type));
  }
  return out;
}

inline StateDict read_torchscript(const std::string& path) {
  auto module = torch::jit::load(path, torch::Device(torch::kCPU));
  StateDict out;
  for (const auto& p : module.named_parameters()) {
    out.emplace_back(p.name, p.value);
  }
  for (const auto& b : module.named_buffers()) {
    out.emplace_back(b.name, b.value);
  }
  return out;
}

template <class F>
auto naming_path(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    // Errors of the library's own readers may name the file already.
    TORCH_CHECK(
        msg.find("'" + path + "'") != std::string::npos,
        "resnet: cannot read checkpoint '",
        path,
        "': ",
        msg);
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false, "resnet: cannot read checkpoint '", path, "': ", e.what());
  }
}

inline CheckpointEntry tensor_entry(
    const std::string& name,
    const torch::Tensor& t) {
  CheckpointEntry e;
  e.path = name;
  e.kind = "tensor";
  e.dtype = std::string(c10::toString(t.scalar_type()));
  e.shape = t.sizes().vec();
  return e;
}

/// Appends the leaves of `v` under `path`: tensors, the tensors of a
/// pickled module, the entries of dicts and of objects that hold tensors,
/// and everything else as one entry.
inline void list_entries(
    const PyValue& tagged,
    const std::string& path,
    std::vector<CheckpointEntry>& out,
    int depth) {
  const PyValue v = untagged(tagged);
  const auto join = [&](const std::string& name) {
    return path.empty() ? name : path + "/" + name;
  };
  if (v.is_tensor()) {
    out.push_back(tensor_entry(path, v.as_tensor()));
    return;
  }
  if (is_pickled_module(v)) {
    StateDict flat;
    flatten_pickled_module(v, "", flat, 0);
    for (const auto& item : flat) {
      out.push_back(tensor_entry(join(item.first), item.second));
    }
    return;
  }
  const auto children = named_children(v);
  if (depth < 16 && !children.empty()) {
    std::vector<CheckpointEntry> inner;
    for (const auto& item : children) {
      list_entries(item.second, join(item.first), inner, depth + 1);
    }
    bool any_tensor = false;
    for (const auto& e : inner) {
      any_tensor = any_tensor || e.kind == "tensor";
    }
    if (any_tensor || v.is_dict()) {
      out.insert(out.end(), inner.begin(), inner.end());
      return;
    }
  }
  CheckpointEntry e;
  e.path = path;
  e.kind = describe_kind(v);
  e.value = v.repr(80);
  out.push_back(std::move(e));
}

} // namespace detail

namespace detail {

/// `read_state_dict`; with `mapped`, tensors may view the mapped file
/// instead of owning copies (for loads that copy them at once).
inline StateDict read_state_dict(
    const std::string& path,
    const std::string& entry,
    bool mapped) {
  return naming_path(path, [&] {
    switch (detect_format(path)) {
      case CheckpointFormat::Safetensors: {
        TORCH_CHECK(
            entry.empty(),
            "a safetensors file holds one flat dict of tensors; it has no "
            "entry '",
            entry,
            "'");
        return mapped ? map_safetensors(path).tensors
                      : read_safetensors(path).tensors;
      }
      case CheckpointFormat::TorchScript:
        TORCH_CHECK(
            entry.empty(),
            "a TorchScript archive has no entry '",
            entry,
            "'; its parameters are read as they are");
        return read_torchscript(path);
      case CheckpointFormat::TorchSave:
      case CheckpointFormat::TorchSaveLegacy:
        break;
    }
    const auto root = read_torch_save(path, mapped);
    StateDict out;
    find_state_dict(root, entry, out);
    return out;
  });
}

} // namespace detail

/// The named tensors of the checkpoint at `path`, on the CPU. The format is
/// told by the content: torch.save's zip archive or legacy format,
/// safetensors, or a TorchScript archive. In torch.save files the state dict
/// is the file itself or, in a training checkpoint, the entry `entry` names
/// (keys joined by '/'), or by default the first of "state_dict",
/// "model_state_dict", "model", "net", "network", "module", ..., "model_ema",
/// "ema" that holds one. Nothing in the file is executed: objects of other
/// types (argparse.Namespace, optimizer state, NumPy values) are skipped.
/// Any problem raises a `c10::Error` naming the path and what was wrong.
inline StateDict read_state_dict(
    const std::string& path,
    const std::string& entry = "") {
  return detail::read_state_dict(path, entry, /*mapped=*/false);
}

/// What the checkpoint at `path` holds: its format, every tensor (path,
/// dtype, shape) and every other entry (epoch, arguments, ...), and which
/// entry `read_state_dict` would take. Raises a `c10::Error` naming the path
/// only when the file cannot be read at all.
inline CheckpointInfo inspect_checkpoint(const std::string& path) {
  return detail::naming_path(path, [&] {
    CheckpointInfo info;
    info.format = detail::detect_format(path);
    if (info.format == CheckpointFormat::Safetensors) {
      const auto file = detail::map_safetensors(path);
      info.metadata = file.metadata;
      for (const auto& item : file.tensors) {
        info.entries.push_back(detail::tensor_entry(item.first, item.second));
      }
      info.state_tensors = file.tensors.size();
      return info;
    }
    if (info.format == CheckpointFormat::TorchScript) {
      const auto state = detail::read_torchscript(path);
      for (const auto& item : state) {
        info.entries.push_back(detail::tensor_entry(item.first, item.second));
      }
      info.state_tensors = state.size();
      return info;
    }
    const auto root = detail::read_torch_save(path);
    detail::list_entries(root, "", info.entries, 0);
    StateDict state;
    try {
      info.state_entry = detail::find_state_dict(root, "", state);
      info.state_tensors = state.size();
    } catch (const c10::Error& e) {
      info.state_error = e.msg();
    }
    return info;
  });
}

/// A listing of `info` for people: format, entries (at most `max_entries`;
/// 0 for all) and the state dict found.
inline std::string to_string(
    const CheckpointInfo& info,
    size_t max_entries = 0) {
  std::ostringstream s;
  s << "format: " << format_name(info.format) << "\n";
  for (const auto& m : info.metadata) {
    s << "metadata: " << m.first << " = " << m.second << "\n";
  }
  size_t shown = 0;
  for (const auto& e : info.entries) {
    if (max_entries && shown == max_entries) {
      s << "... and " << info.entries.size() - shown << " more entries\n";
      break;
    }
    ++shown;
    s << (e.path.empty() ? "(file)" : e.path) << ": ";
    if (e.kind == "tensor") {
      s << e.dtype << " [";
      for (size_t i = 0; i < e.shape.size(); ++i) {
        s << (i ? ", " : "") << e.shape[i];
      }
      s << "]\n";
    } else {
      s << e.kind << (e.value.empty() ? "" : " = " + e.value) << "\n";
    }
  }
  if (info.state_error.empty()) {
    s << "state dict: "
      << (info.state_entry.empty() ? "the whole file"
                                   : "entry '" + info.state_entry + "'")
      << ", " << info.state_tensors << " tensors\n";
  } else {
    s << "state dict: not found: " << info.state_error << "\n";
  }
  return s.str();
}

} // namespace resnet
