#pragma once

// The tree of plain values a pickle is read into (`PyValue`): None, bools,
// numbers, strings, containers, globals kept by name and opaque objects, in
// an arena whose every node is charged to the read's budget.

#include <resnet/io/detail/read_budget.h>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Storage.h>
#include <c10/util/Exception.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace resnet::detail {

/// What a `PyValue` holds.
enum class PyKind : uint8_t {
  None,
  Bool,
  Int,
  BigInt,
  Float,
  String,
  Bytes,
  List,
  Tuple,
  Set,
  Dict,
  Global,
  Object,
  Storage,
  Tensor,
};

inline const char* py_kind_name(PyKind kind) {
  switch (kind) {
    case PyKind::None:
      return "None";
    case PyKind::Bool:
      return "bool";
    case PyKind::Int:
      return "int";
    case PyKind::BigInt:
      return "int (beyond 64 bits)";
    case PyKind::Float:
      return "float";
    case PyKind::String:
      return "str";
    case PyKind::Bytes:
      return "bytes";
    case PyKind::List:
      return "list";
    case PyKind::Tuple:
      return "tuple";
    case PyKind::Set:
      return "set";
    case PyKind::Dict:
      return "dict";
    case PyKind::Global:
      return "global";
    case PyKind::Object:
      return "object";
    case PyKind::Storage:
      return "storage";
    case PyKind::Tensor:
      return "tensor";
  }
  return "?";
}

/// A storage as a tensor sees it: bytes, the dtype its elements have, and
/// the part of `storage` it covers (the legacy format's storage views).
struct PyStorage {
  c10::Storage storage;
  c10::ScalarType dtype = c10::ScalarType::Byte;
  int64_t byte_offset = 0;
  int64_t nbytes = 0;
};

struct PyNode;

/// What only some values have, kept apart so that the many that do not
/// (numbers, strings, plain containers) stay small.
struct PyExtra {
  /// Global and Object: the name within the module.
  std::string name;
  /// Object: the arguments (a tuple), the keyword arguments (NEWOBJ_EX),
  /// the callable when it is not a global. Object and Dict: the BUILD state.
  PyNode* args = nullptr;
  PyNode* kwargs = nullptr;
  PyNode* callee = nullptr;
  PyNode* state = nullptr;
  /// Object: elements appended to it (APPENDS on a list subclass).
  PyNode* appended = nullptr;
  /// Tensor and Storage payloads.
  std::unique_ptr<at::Tensor> tensor;
  std::unique_ptr<PyStorage> storage;
  /// Dict: position of each str/int/bool/None key among the pairs.
  std::unordered_map<std::string, size_t> index;
};

/// One value of an unpickled tree. Owned by the arena of its pickle.
struct PyNode {
  PyKind kind = PyKind::None;
  /// Bool: the value. Dict: an OrderedDict. Set: a frozenset. Bytes: a
  /// bytearray.
  bool flag = false;
  /// Used while checking the tree: 0 unvisited, 1 on the path, 2 done.
  uint8_t color = 0;
  uint32_t height = 0;
  /// Int: the value; Float: the value.
  union {
    int64_t i = 0;
    double f;
  };
  /// String and Bytes: the bytes (UTF-8 for str). BigInt: little-endian
  /// two's complement. Global and Object: the module.
  std::string s;
  /// List, Tuple, Set: the elements. Dict: keys and values alternating.
  /// Object: the items set on it (SETITEMS), alternating like a dict.
  std::vector<PyNode*> items;
  /// The rest, for the values that have any.
  std::unique_ptr<PyExtra> extra;

  /// The extra parts, or an empty set of them.
  const PyExtra& more() const {
    static const PyExtra none;
    return extra ? *extra : none;
  }
};

/// The nodes of one pickle; values keep it alive.
struct PyArena {
  std::deque<PyNode> nodes;
};

/// A value read from a pickle: cheap to copy (it shares the whole tree).
/// A default-constructed PyValue is None.
class PyValue {
 public:
  PyValue() = default;
  PyValue(std::shared_ptr<const PyArena> arena, const PyNode* node)
      : node_(std::move(arena), node) {}

  PyKind kind() const {
    return node_ ? node_->kind : PyKind::None;
  }
  const char* kind_name() const {
    return py_kind_name(kind());
  }
  bool is(PyKind k) const {
    return kind() == k;
  }
  bool is_none() const {
    return is(PyKind::None);
  }
  bool is_dict() const {
    return is(PyKind::Dict);
  }
  bool is_tensor() const {
    return is(PyKind::Tensor);
  }
  bool is_string() const {
    return is(PyKind::String);
  }
  bool is_sequence() const {
    return is(PyKind::List) || is(PyKind::Tuple) || is(PyKind::Set);
  }
  /// An OrderedDict (as opposed to a plain dict).
  bool is_ordered_dict() const {
    return is_dict() && node_->flag;
  }
  /// Identity: both are the same node of the same tree.
  bool same(const PyValue& other) const {
    return node_.get() == other.node_.get();
  }
  /// The identity of the value within its tree, for memoizing walks (equal
  /// for `same` values).
  const void* id() const {
    return node_.get();
  }

  bool as_bool() const {
    expect(PyKind::Bool);
    return node_->flag;
  }
  /// An int (a bool counts, as in Python).
  int64_t as_int() const {
    if (is(PyKind::Bool)) {
      return node_->flag ? 1 : 0;
    }
    expect(PyKind::Int);
    return node_->i;
  }
  /// A float, or an int converted.
  double as_float() const {
    if (is(PyKind::Int) || is(PyKind::Bool)) {
      return static_cast<double>(as_int());
    }
    expect(PyKind::Float);
    return node_->f;
  }
  const std::string& as_string() const {
    expect(PyKind::String);
    return node_->s;
  }
  const std::string& as_bytes() const {
    expect(PyKind::Bytes);
    return node_->s;
  }
  /// BigInt: the little-endian two's complement bytes.
  const std::string& bigint_bytes() const {
    expect(PyKind::BigInt);
    return node_->s;
  }
  const at::Tensor& as_tensor() const {
    expect(PyKind::Tensor);
    return *node_->more().tensor;
  }
  const PyStorage& as_storage() const {
    expect(PyKind::Storage);
    return *node_->more().storage;
  }

  /// Number of elements of a list, tuple or set, or of pairs of a dict.
  size_t size() const {
    if (is_dict()) {
      return node_->items.size() / 2;
    }
    expect_sequence();
    return node_->items.size();
  }
  /// Element `i` of a list, tuple or set.
  PyValue operator[](size_t i) const {
    expect_sequence();
    TORCH_CHECK(
        i < node_->items.size(),
        "index ",
        i,
        " out of range for a ",
        kind_name(),
        " of ",
        node_->items.size());
    return child(node_->items[i]);
  }
  /// The elements of a list, tuple or set.
  std::vector<PyValue> elements() const {
    expect_sequence();
    return children(node_->items);
  }
  /// The pairs of a dict in insertion order.
  std::vector<std::pair<PyValue, PyValue>> as_dict() const {
    expect(PyKind::Dict);
    return pairs(node_->items);
  }
  /// The value under the string key `key` of a dict; None if absent (see
  /// `contains`).
  PyValue get(const std::string& key) const {
    expect(PyKind::Dict);
    const auto* pos = find(key);
    return pos ? child(node_->items[*pos + 1]) : PyValue();
  }
  bool contains(const std::string& key) const {
    expect(PyKind::Dict);
    return find(key) != nullptr;
  }

  /// Global and Object: the module, the name, and both as "module.name".
  const std::string& module() const {
    expect_named();
    return node_->s;
  }
  const std::string& name() const {
    expect_named();
    return node_->more().name;
  }
  std::string qualified_name() const {
    expect_named();
    return node_->s.empty() ? node_->more().name
                            : node_->s + "." + node_->more().name;
  }
  /// Object: the arguments it was called with (a tuple; None if it was
  /// not called, e.g. BUILD on a global).
  PyValue args() const {
    expect(PyKind::Object);
    return child(node_->more().args);
  }
  /// Object: keyword arguments (NEWOBJ_EX), None otherwise.
  PyValue kwargs() const {
    expect(PyKind::Object);
    return child(node_->more().kwargs);
  }
  /// Object or Dict: the state BUILD gave it (an OrderedDict's
  /// `{'_metadata': ...}`), None if none.
  PyValue state() const {
    TORCH_CHECK(
        is(PyKind::Object) || is_dict(),
        "expected an object or dict, got ",
        kind_name());
    return child(node_->more().state);
  }

  /// A short Python-like rendering, at most about `max_chars` long.
  std::string repr(size_t max_chars = 240) const {
    std::string out;
    render(node_.get(), out, max_chars);
    if (out.size() > max_chars) {
      out.resize(max_chars);
      out += "...";
    }
    return out;
  }

 private:
  friend class Unpickler;

  const PyNode* node() const {
    return node_.get();
  }
  PyValue child(const PyNode* n) const {
    if (!n) {
      return PyValue();
    }
    PyValue v;
    v.node_ = std::shared_ptr<const PyNode>(node_, n);
    return v;
  }
  std::vector<PyValue> children(const std::vector<PyNode*>& nodes) const {
    std::vector<PyValue> out;
    out.reserve(nodes.size());
    for (const auto* n : nodes) {
      out.push_back(child(n));
    }
    return out;
  }
  std::vector<std::pair<PyValue, PyValue>> pairs(
      const std::vector<PyNode*>& nodes) const {
    std::vector<std::pair<PyValue, PyValue>> out;
    out.reserve(nodes.size() / 2);
    for (size_t i = 0; i + 1 < nodes.size(); i += 2) {
      out.emplace_back(child(nodes[i]), child(nodes[i + 1]));
    }
    return out;
  }
  const size_t* find(const std::string& key) const {
    const auto& index = node_->more().index;
    const auto it = index.find("s" + key);
    return it == index.end() ? nullptr : &it->second;
  }
  void expect(PyKind k) const {
    TORCH_CHECK(
        kind() == k,
        "expected a ",
        py_kind_name(k),
        ", got ",
        kind_name(),
        " ",
        repr(80));
  }
  void expect_sequence() const {
    TORCH_CHECK(
        is_sequence(),
        "expected a list, tuple or set, got ",
        kind_name(),
        " ",
        repr(80));
  }
  void expect_named() const {
    TORCH_CHECK(
        is(PyKind::Global) || is(PyKind::Object),
        "expected a global or object, got ",
        kind_name());
  }

  static void render_string(const std::string& s, std::string& out) {
    out += '\'';
    for (const unsigned char c : s) {
      if (c == '\'' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c < 0x20 || c == 0x7f) {
        static const char* hex = "0123456789abcdef";
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
      } else {
        out += static_cast<char>(c);
      }
    }
    out += '\'';
  }

  // Each call appends at least one character, and stops once `budget`
  // characters are out, so shared subtrees cannot make it run long; the tree
  // is at most PickleLimits::max_depth deep.
  static void render(const PyNode* n, std::string& out, size_t budget) {
    if (out.size() > budget) {
      return;
    }
    if (!n) {
      out += "None";
      return;
    }
    auto seq = [&](const std::vector<PyNode*>& items,
                   const char* open,
                   const char* close,
                   bool pairs) {
      out += open;
      const size_t step = pairs ? 2 : 1;
      for (size_t i = 0; i + step - 1 < items.size(); i += step) {
        if (out.size() > budget) {
          out += "...";
          break;
        }
        out += i ? ", " : "";
        render(items[i], out, budget);
        if (pairs) {
          out += ": ";
          render(items[i + 1], out, budget);
        }
      }
      out += close;
    };
    switch (n->kind) {
      case PyKind::None:
        out += "None";
        break;
      case PyKind::Bool:
        out += n->flag ? "True" : "False";
        break;
      case PyKind::Int:
        out += std::to_string(n->i);
        break;
      case PyKind::BigInt:
        out += "<int of " + std::to_string(n->s.size()) + " bytes>";
        break;
      case PyKind::Float: {
        std::ostringstream s;
        s << n->f;
        out += s.str();
        break;
      }
      case PyKind::String:
        render_string(n->s.substr(0, budget), out);
        break;
      case PyKind::Bytes:
        out += n->flag ? "bytearray(" : "b";
        render_string(n->s.substr(0, budget), out);
        out += n->flag ? ")" : "";
        break;
      case PyKind::List:
        seq(n->items, "[", "]", false);
        break;
      case PyKind::Tuple:
        seq(n->items, "(", n->items.size() == 1 ? ",)" : ")", false);
        break;
      case PyKind::Set:
        seq(n->items,
            n->flag ? "frozenset({" : "{",
            n->flag ? "})" : "}",
            false);
        break;
      case PyKind::Dict:
        if (n->flag) {
          out += "OrderedDict(";
        }
        seq(n->items, "{", "}", true);
        out += n->flag ? ")" : "";
        break;
      case PyKind::Global:
        out += n->s + "." + n->more().name;
        break;
      case PyKind::Object:
        out += "<" + (n->s.empty() ? "" : n->s + ".") + n->more().name;
        if (n->more().args) {
          render(n->more().args, out, budget);
        }
        out += ">";
        break;
      case PyKind::Storage: {
        std::ostringstream s;
        s << "<storage " << n->more().storage->dtype << " of "
          << n->more().storage->nbytes << " bytes>";
        out += s.str();
        break;
      }
      case PyKind::Tensor: {
        std::ostringstream s;
        s << "tensor(" << n->more().tensor->scalar_type() << ", "
          << n->more().tensor->sizes() << ")";
        out += s.str();
        break;
      }
    }
  }

  std::shared_ptr<const PyNode> node_;
};

} // namespace resnet::detail
