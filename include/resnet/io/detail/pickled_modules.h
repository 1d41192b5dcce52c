#pragma once

// The weights of a pickled `torch.nn.Module` (torch.save(model)) and of a
// TorchScript archive's module tree, flattened into state_dict order without
// running any of their code.

#include <resnet/io/detail/read_budget.h>
#include <resnet/io/detail/unpickler.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace resnet::detail {

/// Named tensors in PyTorch's state_dict order (`resnet::NamedTensors`).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// `text` cut to at most `limit` characters, for messages and listings:
/// names read from a file may be as long as the file.
inline std::string clip(const std::string& text, size_t limit = 200) {
  return text.size() <= limit ? text : text.substr(0, limit) + "...";
}

/// A value as Python would see it: LibTorch's pickler (torch::pickle_save)
/// wraps dicts and lists in `torch.jit._pickle.restore_type_tag(value,
/// type)`, which Python resolves to `value`.
inline PyValue untagged(const PyValue& v) {
  if (v.is(PyKind::Object) && v.module() == "torch.jit._pickle" &&
      v.name() == "restore_type_tag") {
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

/// A module object of a TorchScript archive (`torch.jit.save`, LibTorch's
/// `torch::save(module)`): an instance of a `__torch__` class whose state
/// is the dict of its attributes. One whose class sets its state itself
/// (`__setstate__`, code the archive carries) has other state and is not
/// read: nothing in a file is run.
inline bool is_script_module(const PyValue& v) {
  if (!v.is(PyKind::Object)) {
    return false;
  }
  const auto& module = v.module();
  return (module == "__torch__" || module.rfind("__torch__.", 0) == 0) &&
      v.state().is_dict();
}

/// `a + b + c` in a string of exactly that size (`operator+` may leave
/// twice the capacity, which for names read from a file doubles what they
/// take).
inline std::string
joined(const std::string& a, const std::string& b, const std::string& c = "") {
  std::string out;
  out.reserve(a.size() + b.size() + c.size());
  out += a;
  out += b;
  out += c;
  return out;
}

/// Appends `prefix + name` -> `t` to `out`, charging the key to `budget`.
inline void add_tensor(
    NamedTensors& out,
    const std::string& prefix,
    const std::string& name,
    const at::Tensor& t,
    ReadBudget& budget) {
  budget.spend(prefix.size() + name.size() + 64, "tensor names");
  out.emplace_back(joined(prefix, name), t);
}

/// The parameters and buffers of a pickled module in state_dict order
/// (non-persistent buffers left out), or the tensor attributes of a
/// TorchScript module, without running any of its code; their names start
/// with `prefix`, which the walk extends in place and restores. A module
/// reached by several paths is listed under each, as PyTorch's `state_dict`
/// does; `budget` bounds the walk, so that modules shared over and over
/// cannot make it run for ever.
inline void flatten_module(
    const PyValue& module,
    std::string& prefix,
    NamedTensors& out,
    ReadBudget& budget,
    int depth = 0) {
  TORCH_CHECK(depth < 200, "modules nested too deeply");
  budget.step("the module tree");
  const auto state = module.state();
  const auto child = [&](const std::string& name, const PyValue& m) {
    const size_t mark = prefix.size();
    budget.spend(name.size() + 1, "module names");
    prefix += name;
    prefix += '.';
    flatten_module(m, prefix, out, budget, depth + 1);
    prefix.resize(mark);
  };
  const auto tensor = [&](const std::string& name, const at::Tensor& t) {
    add_tensor(out, prefix, name, t, budget);
  };
  if (!is_pickled_module(module)) {
    // TorchScript: every tensor attribute, and every module attribute.
    for (const auto& item : state.as_dict()) {
      budget.step("the module tree");
      if (!item.first.is_string()) {
        continue;
      }
      if (item.second.is_tensor()) {
        tensor(item.first.as_string(), item.second.as_tensor());
      } else if (is_script_module(item.second)) {
        child(item.first.as_string(), item.second);
      }
    }
    return;
  }
  std::set<std::string> transient;
  const auto non_persistent = state.get("_non_persistent_buffers_set");
  if (non_persistent.is_sequence()) {
    budget.step("the module tree", non_persistent.size());
    for (const auto& name : non_persistent.elements()) {
      if (name.is_string()) {
        budget.spend(name.as_string().size() + 64, "module fields");
        transient.insert(name.as_string());
      }
    }
  }
  for (const char* field : {"_parameters", "_buffers"}) {
    const auto tensors = state.get(field);
    if (!tensors.is_dict()) {
      continue;
    }
    budget.step("the module tree", tensors.size());
    for (const auto& item : tensors.as_dict()) {
      if (item.first.is_string() && item.second.is_tensor() &&
          !transient.count(item.first.as_string())) {
        tensor(item.first.as_string(), item.second.as_tensor());
      }
    }
  }
  const auto children = state.get("_modules");
  if (children.is_dict()) {
    budget.step("the module tree", children.size());
    for (const auto& item : children.as_dict()) {
      if (item.first.is_string() && is_pickled_module(item.second)) {
        child(item.first.as_string(), item.second);
      }
    }
  }
}

/// `v` as a state dict: a dict of name -> tensor (an OrderedDict from
/// `model.state_dict()` or a plain dict), a whole pickled module or a
/// TorchScript module. False (and `out` empty) when `v` is none of them.
inline bool
as_state_dict(const PyValue& tagged, NamedTensors& out, ReadBudget& budget) {
  const PyValue v = untagged(tagged);
  out.clear();
  if (is_pickled_module(v) || is_script_module(v)) {
    std::string prefix;
    flatten_module(v, prefix, out, budget);
    return !out.empty();
  }
  if (!v.is_dict() || v.size() == 0) {
    return false;
  }
  budget.step("a state dict", v.size());
  for (const auto& item : v.as_dict()) {
    if (!item.first.is_string() || !item.second.is_tensor()) {
      out.clear();
      return false;
    }
    add_tensor(
        out, "", item.first.as_string(), item.second.as_tensor(), budget);
  }
  return true;
}

} // namespace resnet::detail
