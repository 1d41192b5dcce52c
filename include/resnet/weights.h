#pragma once

// Reading and writing weights in the formats PyTorch users have: a dict saved
// with torch.save, a TorchScript archive, and this library's own files (which
// Python opens with torch.load).

#include <caffe2/serialize/inline_container.h>
#include <torch/arg.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize.h>
#include <torch/types.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace resnet {

/// Named tensors in PyTorch's state_dict order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

namespace detail {

inline void append_state(
    const torch::nn::Module& m,
    const std::string& prefix,
    StateDict& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false)) {
    out.emplace_back(prefix + p.key(), p.value());
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) {
    out.emplace_back(prefix + b.key(), b.value());
  }
  for (const auto& c : m.named_children()) {
    append_state(*c.value(), prefix + c.key() + ".", out);
  }
}

} // namespace detail

/// Every parameter and buffer of `module`, in the order PyTorch's
/// `state_dict()` lists them: a module's own parameters, its own buffers,
/// then each child in registration order. The tensors are the module's own.
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  detail::append_state(module, "", out);
  return out;
}

/// The key mapping for checkpoints of the widely copied CIFAR ResNets in the
/// style of kuangliu/pytorch-cifar (`shortcut.0/.1` and `linear`), to load
/// into `resnet18` ... `resnet152` built with `Stem::Cifar`:
/// `layer1.0.shortcut.0.weight` -> `layer1.0.downsample.0.weight`,
/// `linear.weight` -> `fc.weight`. Use as `LoadOptions().key_map(...)`.
inline std::string kuangliu_cifar_key(const std::string& key) {
  std::string out = key;
  if (out.rfind("linear.", 0) == 0) {
    out = "fc." + out.substr(7);
  }
  const std::string from = ".shortcut.";
  for (auto pos = out.find(from); pos != std::string::npos;
       pos = out.find(from, pos)) {
    out.replace(pos, from.size(), ".downsample.");
  }
  return out;
}

/// How `load_state_dict` matches a checkpoint to a model.
struct LoadOptions {
  /// Refuse to load if the model has entries the checkpoint lacks, or the
  /// checkpoint has entries the model lacks. Shape mismatches, and integer
  /// values for floating-point parameters (or the reverse), are refused
  /// either way.
  TORCH_ARG(bool, strict) = true;
  /// Entries (of model or checkpoint) whose names start with one of these
  /// are left alone, e.g. {"fc."} to fine-tune with a new classifier.
  TORCH_ARG(std::vector<std::string>, skip_prefixes) = {};
  /// Renames checkpoint keys before matching (see `kuangliu_cifar_key`).
  TORCH_ARG(std::function<std::string(const std::string&)>, key_map) = nullptr;
  /// Drop the `module.` prefix that DataParallel and DistributedDataParallel
  /// add, when every checkpoint key has it.
  TORCH_ARG(bool, strip_module_prefix) = true;
};

/// What `load_state_dict` did.
struct LoadReport {
  /// Model entries that were overwritten.
  std::vector<std::string> loaded;
  /// Model entries the checkpoint lacked (non-strict loads only, and
  /// `num_batches_tracked`, which old checkpoints lack).
  std::vector<std::string> missing;
  /// Checkpoint entries the model lacks (non-strict loads only).
  std::vector<std::string> unexpected;
  /// Checkpoint entries left out because of `skip_prefixes`.
  std::vector<std::string> skipped;
};

namespace detail {

inline std::string join_names(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) {
    out += (i ? ", " : "") + names[i];
  }
  if (names.size() > kShown) {
    out += ", ... and " + std::to_string(names.size() - kShown) + " more";
  }
  return out;
}

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "resnet: cannot open '", path, "' for reading");
  std::vector<char> bytes(
      (std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TORCH_CHECK(!in.bad(), "resnet: error while reading '", path, "'");
  return bytes;
}

/// Writes `bytes` to `path` so that readers see the old file or the new one,
/// never a part: a temporary file beside it, flushed to disk, renamed.
inline void write_file_atomically(
    const std::string& path,
    const std::vector<char>& bytes) {
  std::string tmp = path + ".tmp";
#if defined(__unix__) || defined(__APPLE__)
  tmp += ".";
  tmp += std::to_string(::getpid());
#endif
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TORCH_CHECK(f, "resnet: cannot open '", tmp, "' for writing");
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = std::fflush(f) == 0 && ok;
#if defined(__unix__) || defined(__APPLE__)
  ok = ::fsync(::fileno(f)) == 0 && ok;
#endif
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "resnet: failed to write '", path, "'");
  }
}

/// A dict of string -> tensor, or a dict holding one under "state_dict" or
/// "model" (the layout of many training checkpoints).
inline StateDict state_from_ivalue(const c10::IValue& value) {
  TORCH_CHECK(
      value.isGenericDict(),
      "expected a dict of tensors, got ",
      value.tagKind());
  const auto dict = value.toGenericDict();
  StateDict out;
  bool all_tensors = true;
  for (const auto& item : dict) {
    if (!item.key().isString() || !item.value().isTensor()) {
      all_tensors = false;
      break;
    }
    out.emplace_back(item.key().toStringRef(), item.value().toTensor());
  }
  if (all_tensors) {
    return out;
  }
  for (const char* nested : {"state_dict", "model"}) {
    for (const auto& item : dict) {
      if (item.key().isString() && item.key().toStringRef() == nested &&
          item.value().isGenericDict()) {
        return state_from_ivalue(item.value());
      }
    }
  }
  TORCH_CHECK(
      false,
      "expected a dict of name -> tensor (or one under 'state_dict' or "
      "'model'), found other entries");
}

inline StateDict read_state_dict_or_throw(const std::string& path) {
  const auto bytes = read_file(path);
  TORCH_CHECK(!bytes.empty(), "the file is empty");
  const bool zip = bytes.size() >= 4 && bytes[0] == 'P' && bytes[1] == 'K' &&
      bytes[2] == '\x03' && bytes[3] == '\x04';
  if (!zip) {
    TORCH_CHECK(
        static_cast<unsigned char>(bytes[0]) != 0x80,
        "this is torch.save's legacy format; save it again with "
        "torch.save(dict(model.state_dict()), path) from PyTorch >= 1.6");
    TORCH_CHECK(
        false,
        "not a PyTorch checkpoint (expected the zip archive written by "
        "torch.save, torch.jit.save or resnet::save_state_dict)");
  }
  bool torchscript = false;
  {
    caffe2::serialize::PyTorchStreamReader reader(path);
    TORCH_CHECK(
        reader.hasRecord("data.pkl") || reader.hasRecord("constants.pkl"),
        "the zip archive holds no PyTorch data (no data.pkl)");
    torchscript = reader.hasRecord("constants.pkl");
  }
  if (!torchscript) {
    return state_from_ivalue(torch::pickle_load(bytes));
  }
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

inline bool starts_with_any(
    const std::string& name,
    const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    if (name.rfind(p, 0) == 0) {
      return true;
    }
  }
  return false;
}

inline std::string shape_string(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

} // namespace detail

/// Reads the named tensors of a checkpoint, detecting its format: a dict
/// saved with `torch.save(dict(model.state_dict()), path)` (also nested under
/// "state_dict" or "model"), a TorchScript archive (`torch.jit.script(m)
/// .save(path)`, `torch.jit.trace`), or a file from `save_state_dict`. A
/// missing, empty, truncated or foreign file raises a `c10::Error` naming the
/// path.
inline StateDict read_state_dict(const std::string& path) {
  try {
    return detail::read_state_dict_or_throw(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(
        false, "resnet: cannot read checkpoint '", path, "': ", e.msg());
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false, "resnet: cannot read checkpoint '", path, "': ", e.what());
  }
}

/// Loads `source` into `model`'s parameters and buffers (converted to the
/// model's device and floating-point dtype). Everything is checked before
/// anything is written: on any error the model is exactly as it was, and
/// the one `c10::Error` lists every problem, like PyTorch's strict
/// `load_state_dict`.
inline LoadReport load_state_dict(
    torch::nn::Module& model,
    const StateDict& source,
    const LoadOptions& options = {},
    const std::string& origin = "the state dict") {
  StateDict renamed = source;
  const std::string module_prefix = "module.";
  bool all_prefixed = options.strip_module_prefix() && !renamed.empty();
  for (const auto& item : renamed) {
    all_prefixed = all_prefixed && item.first.rfind(module_prefix, 0) == 0;
  }
  for (auto& item : renamed) {
    if (all_prefixed) {
      item.first = item.first.substr(module_prefix.size());
    }
    if (options.key_map()) {
      item.first = options.key_map()(item.first);
    }
  }

  LoadReport report;
  std::map<std::string, torch::Tensor> incoming;
  std::vector<std::string> duplicated;
  for (const auto& item : renamed) {
    if (detail::starts_with_any(item.first, options.skip_prefixes())) {
      report.skipped.push_back(item.first);
    } else if (!incoming.emplace(item.first, item.second).second) {
      duplicated.push_back(item.first);
    }
  }

  std::vector<std::string> missing, wrong;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  std::set<std::string> used;
  const auto parameters = model.named_parameters();
  for (const auto& item : state_dict(model)) {
    const auto& name = item.first;
    const auto& target = item.second;
    if (detail::starts_with_any(name, options.skip_prefixes())) {
      continue;
    }
    const auto it = incoming.find(name);
    if (it == incoming.end()) {
      const bool optional = name.size() >= 19 &&
          name.compare(name.size() - 19, 19, "num_batches_tracked") == 0;
      (options.strict() && !optional ? missing : report.missing)
          .push_back(name);
      continue;
    }
    used.insert(name);
    const auto& value = it->second;
    if (!value.defined() || value.sizes() != target.sizes()) {
      wrong.push_back(
          name + ": checkpoint " +
          (value.defined() ? detail::shape_string(value) : "undefined") +
          ", model " + detail::shape_string(target));
      continue;
    }
    // Floating-point values convert to the model's dtype. Integers may fill
    // a floating-point buffer (Module::to(dtype) converts integer buffers
    // such as num_batches_tracked too), never a parameter; nothing becomes
    // an integer.
    const bool refused = value.is_floating_point()
        ? !target.is_floating_point()
        : target.is_floating_point() && parameters.find(name) != nullptr;
    if (refused) {
      std::ostringstream s;
      s << name << ": checkpoint " << value.scalar_type() << ", model "
        << target.scalar_type();
      wrong.push_back(s.str());
      continue;
    }
    copies.emplace_back(target, value);
    report.loaded.push_back(name);
  }
  std::vector<std::string> unexpected;
  for (const auto& item : renamed) {
    if (!detail::starts_with_any(item.first, options.skip_prefixes()) &&
        !used.count(item.first)) {
      (options.strict() ? unexpected : report.unexpected).push_back(item.first);
    }
  }

  if (!missing.empty() || !unexpected.empty() || !wrong.empty() ||
      !duplicated.empty()) {
    std::string msg = "resnet: cannot load " + origin +
        " into the model (nothing was changed):";
    if (!missing.empty()) {
      msg += "\n  missing in the checkpoint (" +
          std::to_string(missing.size()) + "): " + detail::join_names(missing);
    }
    if (!unexpected.empty()) {
      msg += "\n  not in the model (" + std::to_string(unexpected.size()) +
          "): " + detail::join_names(unexpected);
    }
    if (!wrong.empty()) {
      msg += "\n  mismatched (" + std::to_string(wrong.size()) +
          "): " + detail::join_names(wrong);
    }
    if (!duplicated.empty()) {
      msg += "\n  given twice after renaming (" +
          std::to_string(duplicated.size()) +
          "): " + detail::join_names(duplicated);
    }
    TORCH_CHECK(false, msg);
  }

  // Convert everything first, so that no error can come after the first
  // write.
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> converted;
  converted.reserve(copies.size());
  for (const auto& c : copies) {
    converted.push_back(
        c.second.to(c.first.device(), c.first.scalar_type()).contiguous());
  }
  for (size_t i = 0; i < copies.size(); ++i) {
    copies[i].first.copy_(converted[i]);
  }
  return report;
}

/// Reads the checkpoint at `path` (see `read_state_dict`) and loads it into
/// `model` (see the overload above).
inline LoadReport load_state_dict(
    torch::nn::Module& model,
    const std::string& path,
    const LoadOptions& options = {}) {
  return load_state_dict(
      model, read_state_dict(path), options, "'" + path + "'");
}

template <class M, class Source>
LoadReport load_state_dict(
    torch::nn::ModuleHolder<M>& model,
    const Source& source,
    const LoadOptions& options = {}) {
  return load_state_dict(*model, source, options);
}

namespace detail {

/// The bytes of torch.save's zip format holding a plain dict of `state`.
/// Unlike torch::pickle_save it writes no TorchScript type tags, which
/// Python's torch.load(weights_only=True) (the default since PyTorch 2.6)
/// refuses.
inline std::vector<char> pickle_state_dict(const StateDict& state) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& item : state) {
    TORCH_CHECK(
        item.second.defined(),
        "resnet: cannot save undefined tensor '",
        item.first,
        "'");
    dict.insert(
        item.first, item.second.detach().to(torch::kCPU).contiguous().clone());
  }
  std::vector<char> pickled;
  torch::jit::Pickler pickler(
      [&](const char* data, size_t size) {
        pickled.insert(pickled.end(), data, data + size);
      },
      /*tensor_table=*/nullptr,
      /*type_renamer=*/nullptr,
      /*memoized_class_types=*/nullptr,
      /*get_tensor_id=*/nullptr,
      /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();

  std::vector<char> archive;
  caffe2::serialize::PyTorchStreamWriter writer(
      [&](const void* data, size_t size) -> size_t {
        const auto* bytes = static_cast<const char*>(data);
        archive.insert(archive.end(), bytes, bytes + size);
        return size;
      });
  const auto& tensors = pickler.tensorData();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto data = torch::jit::getWriteableTensorData(tensors[i]);
    writer.writeRecord(
        "data/" + std::to_string(i), data.data(), data.sizeInBytes());
  }
  writer.writeRecord("data.pkl", pickled.data(), pickled.size());
  writer.writeEndOfFile();
  return archive;
}

} // namespace detail

/// Writes named tensors as a dict that Python opens with `torch.load(path)`
/// (also with weights_only=True) and torchvision's `model.load_state_dict`
/// accepts. Tensors are saved from the CPU; the write is atomic.
inline void save_state_dict(const StateDict& state, const std::string& path) {
  detail::write_file_atomically(path, detail::pickle_state_dict(state));
}

/// Writes `module`'s parameters and buffers (see `state_dict`).
inline void save_state_dict(
    const torch::nn::Module& module,
    const std::string& path) {
  save_state_dict(state_dict(module), path);
}

template <class M>
void save_state_dict(
    const torch::nn::ModuleHolder<M>& module,
    const std::string& path) {
  save_state_dict(*module, path);
}

} // namespace resnet
