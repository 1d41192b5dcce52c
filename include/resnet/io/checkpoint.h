#pragma once

// Reading the weight files that exist: torch.save files (zip or the legacy
// format, a bare state dict or a training checkpoint holding one),
// safetensors, and TorchScript archives. The format is told by the file's
// content, never by its name; the state dict is found inside checkpoints by
// the names training scripts give it.

#include <resnet/io/detail/mapped_file.h>
#include <resnet/io/detail/pickled_modules.h>
#include <resnet/io/detail/read_budget.h>
#include <resnet/io/detail/state_dict_search.h>
#include <resnet/io/detail/torch_save.h>
#include <resnet/io/detail/unpickler.h>
#include <resnet/io/detail/zip.h>
#include <resnet/io/files.h>
#include <resnet/io/safetensors.h>
#include <resnet/io/state_dict.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
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

/// The format's name in messages: "torch.save (zip)", "safetensors", ...
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
  /// Tensors: the size of each dimension (empty for a scalar).
  std::vector<int64_t> shape;
  /// Other values: a short rendering ("93.1", "'resnet50'", ...).
  std::string value;
};

/// What a checkpoint file holds.
struct CheckpointInfo {
  /// The file's format, told by its content, not its name.
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

/// Tells the format of the `size` bytes of a file at `data` by their
/// content; a zip archive's directory is read (and checked) as the readers
/// read it.
inline CheckpointFormat detect_format(const char* data, size_t size) {
  const std::string head(data, std::min<size_t>(size, 64));
  if (safetensors_signature(head, size)) {
    return CheckpointFormat::Safetensors;
  }
  if (looks_like_torch_legacy(head.data(), head.size())) {
    return CheckpointFormat::TorchSaveLegacy;
  }
  if (has_zip_magic(data, size)) {
    bool pickle = false;
    bool script = false;
    try {
      ReadBudget budget(size);
      const TorchArchive archive(data, size, budget);
      pickle = archive.find("data.pkl") != nullptr;
      script = archive.find("constants.pkl") != nullptr;
    } catch (const c10::Error& e) {
      TORCH_CHECK(
          false,
          "a zip archive that cannot be read (truncated or damaged?): ",
          e.msg());
    }
    if (pickle) {
      return script ? CheckpointFormat::TorchScript
                    : CheckpointFormat::TorchSave;
    }
  }
  TORCH_CHECK(false, guess_foreign(head));
}

/// Tells the format of the file at `path` by its content.
inline CheckpointFormat detect_format(const std::string& path) {
  const auto file = MappedFile::open(path);
  return detect_format(file->data(), file->size());
}

/// The tensors of a mapped safetensors file as views of the mapping:
/// nothing is copied until they are used. For a load that copies them into
/// a model at once; a file truncated by someone else while they live would
/// fault.
inline SafetensorsFile map_safetensors(
    const std::shared_ptr<const MappedFile>& file) {
  check_little_endian_host();
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

/// Runs `f`, making any error name the file at `path`. Messages are
/// bounded: whatever a file holds, an error about it stays short.
template <class F>
auto naming_path(const std::string& path, F&& f) -> decltype(f()) {
  constexpr size_t kMaxMessage = 4000;
  const auto bounded = [&](std::string msg) {
    if (msg.size() > kMaxMessage) {
      msg.resize(kMaxMessage);
      msg += "...";
    }
    return msg;
  };
  try {
    return f();
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    // Errors of the library's own readers may name the file already.
    TORCH_CHECK(
        msg.find("'" + path + "'") != std::string::npos &&
            msg.size() <= kMaxMessage,
        "resnet: cannot read checkpoint '",
        path,
        "': ",
        bounded(msg));
    throw;
  } catch (const std::bad_alloc&) {
    TORCH_CHECK(
        false, "resnet: cannot read checkpoint '", path, "': out of memory");
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false,
        "resnet: cannot read checkpoint '",
        path,
        "': ",
        bounded(e.what()));
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

/// The listing of a checkpoint's tree for `inspect_checkpoint`: every value
/// is expanded once; a dict or object met again is one entry that names
/// where it was first listed.
class EntryLister {
 public:
  EntryLister(std::vector<CheckpointEntry>& out, ReadBudget& budget)
      : out_(out), budget_(budget) {}

  /// Appends the leaves of `v` under `path`: tensors, the tensors of a
  /// pickled or TorchScript module, the entries of dicts and of objects
  /// that hold tensors, and everything else as one entry.
  void list(const PyValue& tagged, const std::string& path, int depth = 0) {
    const PyValue v = untagged(tagged);
    budget_.step("the checkpoint's entries");
    const auto join = [&](const std::string& name) {
      budget_.spend(path.size() + name.size() + 1, "entry paths");
      return path.empty() ? name : joined(path, "/", name);
    };
    if (v.is_tensor()) {
      add(tensor_entry(path, v.as_tensor()));
      return;
    }
    const bool container = v.is_dict() || v.is(PyKind::Object);
    if (container) {
      const auto first = listed_.emplace(v.id(), path);
      if (!first.second) {
        CheckpointEntry e;
        e.path = path;
        e.kind = describe_kind(v);
        e.value = "the same object as '" +
            clip(first.first->second.empty() ? "(file)" : first.first->second) +
            "'";
        add(std::move(e));
        return;
      }
    }
    if (is_pickled_module(v) || is_script_module(v)) {
      StateDict flat;
      std::string prefix;
      flatten_module(v, prefix, flat, budget_);
      for (const auto& item : flat) {
        add(tensor_entry(join(item.first), item.second));
      }
      return;
    }
    const auto children = named_children(v, budget_);
    if (depth < 16 && !children.empty()) {
      const size_t before = out_.size();
      for (const auto& item : children) {
        list(item.second, join(item.first), depth + 1);
      }
      bool any_tensor = false;
      for (size_t i = before; i < out_.size(); ++i) {
        any_tensor = any_tensor || out_[i].kind == "tensor";
      }
      if (any_tensor || v.is_dict()) {
        return;
      }
      out_.resize(before);
    }
    CheckpointEntry e;
    e.path = path;
    e.kind = describe_kind(v);
    e.value = v.repr(80);
    add(std::move(e));
  }

 private:
  void add(CheckpointEntry e) {
    budget_.spend(
        sizeof(CheckpointEntry) + e.path.size() + e.kind.size() +
            e.value.size() + e.dtype.size() + 8 * e.shape.size(),
        "the listing");
    out_.push_back(std::move(e));
  }

  std::vector<CheckpointEntry>& out_;
  ReadBudget& budget_;
  std::unordered_map<const void*, std::string> listed_;
};

/// A checkpoint file mapped once and read by the one reader its format
/// has, within a budget for its size.
struct OpenedCheckpoint {
  explicit OpenedCheckpoint(const std::string& path)
      : file(MappedFile::open(path)),
        budget(file->size()),
        format(detect_format(file->data(), file->size())) {}

  /// The root object of a torch.save file or TorchScript archive; with
  /// `views`, its tensors may view the mapped file (for loads that copy
  /// them at once).
  PyValue root(bool views) {
    return read_torch_save(
        file->data(), file->size(), budget, views ? file : nullptr);
  }

  std::shared_ptr<const MappedFile> file;
  ReadBudget budget;
  CheckpointFormat format;
};

/// `read_state_dict`; with `mapped`, tensors may view the mapped file
/// instead of owning copies (for loads that copy them at once).
inline StateDict read_state_dict(
    const std::string& path,
    const std::string& entry,
    bool mapped) {
  return naming_path(path, [&] {
    OpenedCheckpoint file(path);
    switch (file.format) {
      case CheckpointFormat::Safetensors:
        TORCH_CHECK(
            entry.empty(),
            "a safetensors file holds one flat dict of tensors; it has no "
            "entry '",
            clip(entry),
            "'");
        return mapped ? map_safetensors(file.file).tensors
                      : read_safetensors_or_throw(path).tensors;
      case CheckpointFormat::TorchScript:
        TORCH_CHECK(
            entry.empty(),
            "a TorchScript archive has no entry '",
            clip(entry),
            "'; its parameters and buffers are read as they are");
        break;
      case CheckpointFormat::TorchSave:
      case CheckpointFormat::TorchSaveLegacy:
        break;
    }
    const auto root = file.root(mapped);
    StateDict out;
    find_state_dict(root, entry, out, file.budget);
    return out;
  });
}

} // namespace detail

/// The named tensors of the checkpoint at `path`, on the CPU. The format is
/// told by the content: torch.save's zip archive or legacy format,
/// safetensors, or a TorchScript archive (its parameters and buffers, read
/// from its pickled modules; the code it carries is never run). In
/// torch.save files the state dict is the file itself or, in a training
/// checkpoint, the entry `entry` names (keys joined by '/'), or by default
/// the first of "state_dict", "model_state_dict", "model", "net", "network",
/// "module", ..., "model_ema", "ema" that holds one. Nothing in the file is
/// executed: objects of other types (argparse.Namespace, optimizer state,
/// NumPy values) are skipped. Only regular files are read, and a read takes
/// time and memory in proportion to the file (see the README's
/// reliability section). Any problem raises a `c10::Error` naming the path
/// and what was wrong.
inline StateDict read_state_dict(
    const std::string& path,
    const std::string& entry = "") {
  return detail::read_state_dict(path, entry, /*mapped=*/false);
}

/// What the checkpoint at `path` holds: its format, every tensor (path,
/// dtype, shape) and every other entry (epoch, arguments, ...), and which
/// entry `read_state_dict` would take. A dict or object that several
/// entries share is listed once, and named where it appears again. Raises
/// a `c10::Error` naming the path only when the file cannot be read at all.
inline CheckpointInfo inspect_checkpoint(const std::string& path) {
  return detail::naming_path(path, [&] {
    detail::OpenedCheckpoint file(path);
    CheckpointInfo info;
    info.format = file.format;
    if (info.format == CheckpointFormat::Safetensors) {
      const auto st = detail::map_safetensors(file.file);
      info.metadata = st.metadata;
      for (const auto& item : st.tensors) {
        info.entries.push_back(detail::tensor_entry(item.first, item.second));
      }
      info.state_tensors = st.tensors.size();
      return info;
    }
    const auto root = file.root(/*views=*/true);
    detail::EntryLister(info.entries, file.budget).list(root, "");
    StateDict state;
    try {
      info.state_entry = detail::find_state_dict(root, "", state, file.budget);
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
