#pragma once

// Finding the state dict in a checkpoint's tree: under the names training
// scripts give it, in a pickled module, or as the only dict of tensors; each
// value is visited once, whatever shares it.

#include <resnet/io/detail/pickled_modules.h>
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

/// A short description of a value for error messages and listings.
inline std::string describe_kind(const PyValue& tagged) {
  const PyValue v = untagged(tagged);
  if (v.is(PyKind::Object) || v.is(PyKind::Global)) {
    return clip(v.qualified_name()) +
        (v.is(PyKind::Object) ? " object" : " (a class or function)");
  }
  if (v.is_dict() && v.is_ordered_dict()) {
    return "OrderedDict";
  }
  return v.kind_name();
}

/// The entries of a dict-like value: a dict's string-keyed pairs, or an
/// object's attributes (its BUILD state), charged to `budget`.
inline std::vector<std::pair<std::string, PyValue>> named_children(
    const PyValue& tagged,
    ReadBudget& budget) {
  const PyValue v = untagged(tagged);
  std::vector<std::pair<std::string, PyValue>> out;
  PyValue dict = v;
  if (v.is(PyKind::Object)) {
    dict = v.state();
  }
  if (!dict.is_dict()) {
    return out;
  }
  budget.step("the checkpoint's entries", dict.size());
  for (const auto& item : dict.as_dict()) {
    if (item.first.is_string()) {
      budget.spend(item.first.as_string().size() + 64, "entry names");
      out.emplace_back(item.first.as_string(), item.second);
    } else if (item.first.is(PyKind::Int)) {
      out.emplace_back(std::to_string(item.first.as_int()), item.second);
    }
  }
  return out;
}

/// Names joined by ", " for a message: at most `shown`, each clipped, then
/// how many more there are.
inline std::string some_names(
    const std::vector<std::string>& names,
    size_t shown = 12) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < shown; ++i) {
    out += (i ? ", " : "") + clip(names[i], 240);
  }
  if (names.size() > shown) {
    out += ", ... and " + std::to_string(names.size() - shown) + " more";
  }
  return out;
}

inline std::string entry_list(const PyValue& root, ReadBudget& budget) {
  std::vector<std::string> shown;
  const auto children = named_children(root, budget);
  for (const auto& item : children) {
    if (shown.size() == 12) {
      break;
    }
    shown.push_back(
        "'" + clip(item.first, 120) + "' (" + describe_kind(item.second) + ")");
  }
  if (children.empty()) {
    return "none";
  }
  std::string out = some_names(shown, 12);
  if (children.size() > shown.size()) {
    out +=
        ", ... and " + std::to_string(children.size() - shown.size()) + " more";
  }
  return out;
}

/// The search for a state dict in a checkpoint's tree: each value is tried
/// once, however many entries share it.
class NamedTensorsSearch {
 public:
  explicit NamedTensorsSearch(ReadBudget& budget) : budget_(budget) {}

  /// Whether `v` is a state dict; if so `out` holds it.
  bool take(const PyValue& v, NamedTensors& out) {
    const auto id = untagged(v).id();
    const auto known = tried_.find(id);
    if (known != tried_.end() && !known->second) {
      return false;
    }
    const bool is = as_state_dict(v, out, budget_);
    tried_[id] = is;
    return is;
  }
  /// Whether `v` is a state dict, without keeping it.
  bool is_state_dict(const PyValue& v) {
    const auto id = untagged(v).id();
    const auto known = tried_.find(id);
    if (known != tried_.end()) {
      return known->second;
    }
    NamedTensors scratch;
    return take(v, scratch);
  }
  ReadBudget& budget() {
    return budget_;
  }

 private:
  ReadBudget& budget_;
  std::unordered_map<const void*, bool> tried_;
};

/// Finds the state dict in a checkpoint tree. `entry` (keys joined by '/')
/// names it; empty means: the file itself if it is one, else the first of
/// `state_dict_keys()` that holds one (also one level further down, as in
/// {"model": {"state_dict": ...}}), else the only dict of tensors among the
/// entries. Returns the path taken. Every value is looked at once, and the
/// walk is charged to `budget`.
inline std::string find_state_dict(
    const PyValue& root,
    const std::string& entry,
    NamedTensors& out,
    ReadBudget& budget) {
  NamedTensorsSearch search(budget);
  if (!entry.empty()) {
    PyValue at = root;
    std::string walked;
    size_t start = 0;
    while (start <= entry.size()) {
      const auto end = std::min(entry.find('/', start), entry.size());
      const std::string key = entry.substr(start, end - start);
      bool found = false;
      for (const auto& item : named_children(at, budget)) {
        if (item.first == key) {
          at = item.second;
          found = true;
          break;
        }
      }
      TORCH_CHECK(
          found,
          "no entry '",
          clip(key),
          "' in ",
          walked.empty() ? "the file" : "'" + clip(walked) + "'",
          "; its entries: ",
          entry_list(at, budget));
      walked += (walked.empty() ? "" : "/") + key;
      start = end + 1;
    }
    TORCH_CHECK(
        search.take(at, out),
        "entry '",
        clip(entry),
        "' is a ",
        describe_kind(at),
        ", not a dict of name -> tensor");
    return entry;
  }

  if (search.take(root, out)) {
    return "";
  }
  const auto children = named_children(root, budget);
  for (const auto& key : state_dict_keys()) {
    for (const auto& item : children) {
      if (item.first != key) {
        continue;
      }
      if (search.take(item.second, out)) {
        return key;
      }
      for (const auto& inner : named_children(item.second, budget)) {
        for (const auto& inner_key : state_dict_keys()) {
          if (inner.first == inner_key && search.take(inner.second, out)) {
            return key + "/" + inner_key;
          }
        }
      }
    }
  }
  // The only dict of tensors among the entries (one value under several
  // names counts once).
  std::vector<std::string> candidates;
  std::set<const void*> seen;
  const PyValue* first = nullptr;
  for (const auto& item : children) {
    if (search.is_state_dict(item.second) &&
        seen.insert(untagged(item.second).id()).second) {
      candidates.push_back(item.first);
      first = first ? first : &item.second;
    }
  }
  if (candidates.size() == 1) {
    search.take(*first, out);
    return candidates.front();
  }
  if (candidates.size() > 1) {
    std::vector<std::string> quoted;
    for (const auto& c : candidates) {
      quoted.push_back("'" + clip(c, 120) + "'");
    }
    TORCH_CHECK(
        false,
        "several entries hold a state dict (",
        some_names(quoted),
        "); choose one with LoadOptions().entry(name)");
  }
  std::vector<std::string> opaque;
  for (const auto& item : children) {
    if (item.second.is(PyKind::Object)) {
      opaque.push_back(clip(item.second.qualified_name(), 120));
    }
  }
  TORCH_CHECK(
      false,
      "found no state dict (a dict of name -> tensor) in this ",
      root.is_dict()                ? "dict"
          : root.is(PyKind::Object) ? describe_kind(root)
                                    : std::string(root.kind_name()),
      "; its entries: ",
      entry_list(root, budget),
      opaque.empty() ? ""
                     : "; objects of types not read (" + some_names(opaque, 6) +
              ") may hold tensors",
      ". Name the entry with LoadOptions().entry(\"name\") (nested: "
      "\"outer/inner\")");
}

/// `find_state_dict` with a budget of its own (for values read apart from
/// a file).
inline std::string find_state_dict(
    const PyValue& root,
    const std::string& entry,
    NamedTensors& out) {
  ReadBudget budget;
  return find_state_dict(root, entry, out, budget);
}

} // namespace resnet::detail
