#pragma once

// Loading weights into a model and saving them: strict, all-or-nothing
// loads from any file `read_state_dict` reads (torch.save, safetensors,
// TorchScript), and files Python opens with torch.load or safetensors.
// Checkpoints with other names load through `LoadOptions::key_map` (e.g.
// `kuangliu_cifar_key` in <resnet/model/models.h>).

#include <resnet/io/checkpoint.h>
#include <resnet/io/detail/torch_save.h>
#include <resnet/io/files.h>
#include <resnet/io/safetensors.h>
#include <resnet/io/state_dict.h>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

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
  /// Where the state dict sits in a training checkpoint: a key such as
  /// "net" or "model_ema", or nested keys joined by '/'. Empty: the file
  /// itself or the usual names (see `read_state_dict`).
  TORCH_ARG(std::string, entry) = "";
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
          std::to_string(missing.size()) + "): " + detail::some_names(missing);
    }
    if (!unexpected.empty()) {
      msg += "\n  not in the model (" + std::to_string(unexpected.size()) +
          "): " + detail::some_names(unexpected);
    }
    if (!wrong.empty()) {
      msg += "\n  mismatched (" + std::to_string(wrong.size()) +
          "): " + detail::some_names(wrong);
    }
    if (!duplicated.empty()) {
      msg += "\n  given twice after renaming (" +
          std::to_string(duplicated.size()) +
          "): " + detail::some_names(duplicated);
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

/// Reads the checkpoint at `path` (see `read_state_dict`; `options.entry()`
/// picks the state dict of a training checkpoint) and loads it into `model`
/// (see the overload above). A file that cannot be read leaves the model
/// as it was.
inline LoadReport load_state_dict(
    torch::nn::Module& model,
    const std::string& path,
    const LoadOptions& options = {}) {
  // The tensors may view the mapped file: they are copied into the model
  // before this returns.
  return load_state_dict(
      model,
      detail::read_state_dict(path, options.entry(), /*mapped=*/true),
      options,
      "'" + path + "'");
}

/// `load_state_dict` into the module a holder (`ResNet<Block>`,
/// `AnyResNet`, ...) holds.
template <class M, class Source>
LoadReport load_state_dict(
    torch::nn::ModuleHolder<M>& model,
    const Source& source,
    const LoadOptions& options = {}) {
  return load_state_dict(*model, source, options);
}

/// Writes named tensors in the format the extension of `path` names: a
/// safetensors file for `.safetensors`, otherwise torch.save's zip format
/// holding an OrderedDict, as `torch.save(model.state_dict(), path)` writes.
/// Python opens either (`torch.load(path, weights_only=True)`,
/// `safetensors.torch.load_file`) and torchvision's and timm's
/// `load_state_dict` accept them. Tensors are saved from the CPU; the write
/// is atomic (the old file, or the new one, never a part).
inline void save_state_dict(const StateDict& state, const std::string& path) {
  const std::string ext = ".safetensors";
  if (path.size() >= ext.size() &&
      path.compare(path.size() - ext.size(), ext.size(), ext) == 0) {
    save_safetensors(state, path);
    return;
  }
  std::vector<char> bytes;
  try {
    bytes = detail::write_torch_save(state);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "resnet: cannot save '", path, "': ", e.msg());
  }
  write_file_atomically(path, bytes);
}

/// Writes `module`'s parameters and buffers (see `state_dict`).
inline void save_state_dict(
    const torch::nn::Module& module,
    const std::string& path) {
  save_state_dict(state_dict(module), path);
}

/// `save_state_dict` of the module a holder holds.
template <class M>
void save_state_dict(
    const torch::nn::ModuleHolder<M>& module,
    const std::string& path) {
  save_state_dict(*module, path);
}

} // namespace resnet
