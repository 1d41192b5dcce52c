#pragma once

// Python's pickle format, read into a tree of plain values and written in the
// small subset torch.save needs. The reader handles protocols 2 to 5 (and the
// text opcodes they still use) and never executes anything: a global is kept
// by name, and calling one makes an opaque object that holds the name, the
// arguments and the state, unless it is one of a few data constructors
// (OrderedDict, set, bytes through _codecs.encode, ...) or the caller's hook
// builds it (tensors). Every length, index and size is checked against the
// input and against fixed limits, and everything the tree takes is charged
// to the read's budget (see read_budget.h); any problem is a c10::Error
// saying what was wrong.

#include <resnet/detail/read_budget.h>

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
  /// Object: items set on it (a dict subclass), in order.
  std::vector<std::pair<PyValue, PyValue>> object_items() const {
    expect(PyKind::Object);
    return pairs(node_->items);
  }
  /// Object: elements appended to it (a list subclass); None if none.
  PyValue object_appended() const {
    expect(PyKind::Object);
    return child(node_->more().appended);
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

/// Limits on what one pickle may make the reader do.
struct PickleLimits {
  /// Nesting of containers and objects in the result.
  size_t max_depth = 1000;
  /// Values on the stack and marks at any time.
  size_t max_stack = size_t{1} << 20;
  /// Values in the memo.
  size_t max_memo = size_t{1} << 24;
  /// Values made in all (each costs about 200 bytes).
  size_t max_nodes = size_t{1} << 24;
};

/// Reads one pickle from memory. `hooks` let the caller resolve persistent
/// ids and build values for the globals it knows (tensors); everything else
/// is kept as data.
class Unpickler {
 public:
  /// Resolves a persistent id (BINPERSID) to a value, usually through
  /// `make_storage`.
  using PersistentLoad = std::function<PyValue(Unpickler&, const PyValue&)>;
  /// Builds the value of calling `callable` (a global) with `args` (a
  /// tuple), or returns nullopt to keep the call as an opaque object.
  using CallHook = std::function<
      std::optional<PyValue>(Unpickler&, const PyValue&, const PyValue&)>;

  /// Reads the `size` bytes at `data`, charging what the values take to
  /// `budget` (by default a budget of its own for input of this size).
  Unpickler(
      const char* data,
      size_t size,
      PersistentLoad persistent_load = nullptr,
      CallHook call_hook = nullptr,
      PickleLimits limits = {},
      ReadBudget* budget = nullptr)
      : data_(data),
        size_(size),
        persistent_load_(std::move(persistent_load)),
        call_hook_(std::move(call_hook)),
        limits_(limits),
        own_budget_(budget ? nullptr : std::make_unique<ReadBudget>(size)),
        budget_(budget ? budget : own_budget_.get()),
        arena_(std::make_shared<PyArena>()) {}

  /// Runs the pickle up to its STOP and returns the value it made.
  PyValue parse() {
    while (true) {
      const uint8_t op = byte();
      if (op == '.') {
        TORCH_CHECK(
            stack_.size() == 1 && marks_.empty(),
            "pickle: STOP with ",
            stack_.size(),
            " values on the stack");
        check_tree(stack_.back());
        return value(stack_.back());
      }
      step(op);
    }
  }

  /// Bytes of the input the pickle took, up to and including its STOP.
  size_t consumed() const {
    return pos_;
  }

  /// The budget the values are charged to, for hooks.
  ReadBudget& budget() {
    return *budget_;
  }

  /// A value holding `tensor`, for hooks.
  PyValue make_tensor(at::Tensor tensor) {
    charge(kTensorBytes, "tensors");
    PyNode* n = make(PyKind::Tensor);
    extra(n).tensor = std::make_unique<at::Tensor>(std::move(tensor));
    return value(n);
  }
  /// A value holding `storage`, for persistent_load.
  PyValue make_storage(PyStorage storage) {
    charge(sizeof(PyStorage) + 64, "storages");
    PyNode* n = make(PyKind::Storage);
    extra(n).storage = std::make_unique<PyStorage>(std::move(storage));
    return value(n);
  }

 private:
  // ---- input -------------------------------------------------------------
  size_t left() const {
    return size_ - pos_;
  }
  const char* take(uint64_t n, const char* what) {
    TORCH_CHECK(
        n <= left(),
        "pickle: ",
        what,
        " of ",
        n,
        " bytes at offset ",
        pos_,
        " runs past the end of the data (",
        left(),
        " bytes left)");
    const char* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  uint8_t byte() {
    return static_cast<uint8_t>(*take(1, "opcode or operand"));
  }
  uint64_t little(size_t n, const char* what) {
    const auto* p = reinterpret_cast<const uint8_t*>(take(n, what));
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) {
      v |= static_cast<uint64_t>(p[k]) << (8 * k);
    }
    return v;
  }
  std::string line(const char* what) {
    const char* start = data_ + pos_;
    const void* nl = std::memchr(start, '\n', left());
    TORCH_CHECK(nl, "pickle: unterminated ", what, " at offset ", pos_);
    const size_t n = static_cast<const char*>(nl) - start;
    pos_ += n + 1;
    return std::string(start, n);
  }

  // ---- values ------------------------------------------------------------
  // What a tensor's metadata takes (TensorImpl, sizes, strides).
  static constexpr uint64_t kTensorBytes = 512;
  void charge(uint64_t bytes, const char* what) {
    budget_->spend(bytes, what);
  }
  // The extra parts of `n`, made (and charged) on first use.
  PyExtra& extra(PyNode* n) {
    if (!n->extra) {
      charge(sizeof(PyExtra) + 16, "pickled objects");
      n->extra = std::make_unique<PyExtra>();
    }
    return *n->extra;
  }
  PyNode* make(PyKind kind) {
    TORCH_CHECK(
        arena_->nodes.size() < limits_.max_nodes,
        "pickle: more than ",
        limits_.max_nodes,
        " values");
    // The node, its share of the arena's blocks and a slot on the stack.
    charge(sizeof(PyNode) + 24, "pickled values");
    arena_->nodes.emplace_back();
    PyNode* n = &arena_->nodes.back();
    n->kind = kind;
    return n;
  }
  PyValue value(const PyNode* n) {
    return PyValue(arena_, n);
  }
  PyNode* node_of(const PyValue& v) {
    if (!v.node()) {
      return make(PyKind::None);
    }
    return const_cast<PyNode*>(v.node());
  }
  PyNode* make_int(int64_t v) {
    PyNode* n = make(PyKind::Int);
    n->i = v;
    return n;
  }
  PyNode* make_bool(bool v) {
    PyNode* n = make(PyKind::Bool);
    n->flag = v;
    return n;
  }
  PyNode* make_bytes(PyKind kind, const char* p, size_t n) {
    charge(n, "pickled strings");
    PyNode* node = make(kind);
    node->s.assign(p, n);
    return node;
  }
  PyNode* make_named(PyKind kind, std::string module, std::string name) {
    charge(module.size() + name.size(), "pickled names");
    PyNode* n = make(kind);
    n->s = std::move(module);
    extra(n).name = std::move(name);
    return n;
  }

  // ---- stack -------------------------------------------------------------
  void push(PyNode* n) {
    TORCH_CHECK(
        stack_.size() < limits_.max_stack,
        "pickle: more than ",
        limits_.max_stack,
        " values on the stack");
    stack_.push_back(n);
  }
  PyNode* pop(const char* op) {
    TORCH_CHECK(stack_.size() > floor(), "pickle: ", op, " on an empty stack");
    PyNode* n = stack_.back();
    stack_.pop_back();
    return n;
  }
  PyNode* top(const char* op) {
    TORCH_CHECK(stack_.size() > floor(), "pickle: ", op, " on an empty stack");
    return stack_.back();
  }
  size_t floor() const {
    return marks_.empty() ? 0 : marks_.back();
  }
  std::vector<PyNode*> pop_mark(const char* op) {
    TORCH_CHECK(!marks_.empty(), "pickle: ", op, " without a MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    charge((stack_.size() - m) * sizeof(PyNode*), "pickled containers");
    std::vector<PyNode*> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }

  // ---- containers --------------------------------------------------------
  static std::optional<std::string> key_of(const PyNode* k) {
    switch (k->kind) {
      case PyKind::String:
        return "s" + k->s;
      case PyKind::Int:
        return "i" + std::to_string(k->i);
      case PyKind::Bool:
        return "i" + std::to_string(k->flag ? 1 : 0);
      case PyKind::None:
        return std::string("n");
      default:
        return std::nullopt;
    }
  }
  void set_item(PyNode* d, PyNode* k, PyNode* v) {
    if (d->kind == PyKind::Object) {
      d->items.push_back(k);
      d->items.push_back(v);
      return;
    }
    TORCH_CHECK(
        d->kind == PyKind::Dict,
        "pickle: SETITEM on a ",
        py_kind_name(d->kind));
    const auto key = key_of(k);
    charge(2 * sizeof(PyNode*) + (key ? key->size() + 64 : 0), "pickled dicts");
    if (key) {
      auto& index = extra(d).index;
      const auto it = index.find(*key);
      if (it != index.end()) {
        d->items[it->second + 1] = v;
        return;
      }
      index.emplace(*key, d->items.size());
    }
    d->items.push_back(k);
    d->items.push_back(v);
  }
  void append(PyNode* list, std::vector<PyNode*> items, const char* op) {
    if (list->kind == PyKind::Object) {
      auto& appended = extra(list).appended;
      if (!appended) {
        appended = make(PyKind::List);
      }
      list = appended;
    }
    TORCH_CHECK(
        list->kind == PyKind::List || list->kind == PyKind::Set,
        "pickle: ",
        op,
        " on a ",
        py_kind_name(list->kind));
    charge(items.size() * sizeof(PyNode*), "pickled containers");
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  PyNode* tuple(std::vector<PyNode*> items) {
    PyNode* t = make(PyKind::Tuple);
    t->items = std::move(items);
    return t;
  }

  // ---- calls -------------------------------------------------------------
  static bool is_global(const PyNode* n, const char* module, const char* name) {
    return n->kind == PyKind::Global && n->s == module &&
        n->more().name == name;
  }
  static bool builtin(const PyNode* n, const char* name) {
    return is_global(n, "builtins", name) || is_global(n, "__builtin__", name);
  }
  // str (UTF-8) to the bytes latin-1 encodes it as; nullopt if a character
  // is beyond U+00FF or the UTF-8 is malformed.
  static std::optional<std::string> latin1(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t k = 0; k < s.size(); ++k) {
      const auto c = static_cast<unsigned char>(s[k]);
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if (
          (c == 0xc2 || c == 0xc3) && k + 1 < s.size() &&
          (static_cast<unsigned char>(s[k + 1]) & 0xc0) == 0x80) {
        out += static_cast<char>(
            ((c & 0x03) << 6) | (static_cast<unsigned char>(s[k + 1]) & 0x3f));
        ++k;
      } else {
        return std::nullopt;
      }
    }
    return out;
  }
  // The data value a known constructor makes, or nullptr.
  PyNode* construct(PyNode* callable, PyNode* args) {
    if (args->kind != PyKind::Tuple) {
      return nullptr;
    }
    const auto& a = args->items;
    auto arg = [&](size_t k, PyKind kind) {
      return a.size() > k && a[k]->kind == kind;
    };
    if (is_global(callable, "collections", "OrderedDict") ||
        is_global(callable, "collections", "defaultdict") ||
        builtin(callable, "dict")) {
      const bool ordered = callable->more().name == "OrderedDict";
      const bool defaultdict = callable->more().name == "defaultdict";
      if (a.size() > (defaultdict ? 1u : 0u)) {
        return nullptr;
      }
      PyNode* d = make(PyKind::Dict);
      d->flag = ordered;
      return d;
    }
    if (builtin(callable, "set") || builtin(callable, "frozenset")) {
      if (!(a.empty() ||
            (a.size() == 1 &&
             (arg(0, PyKind::List) || arg(0, PyKind::Tuple))))) {
        return nullptr;
      }
      PyNode* s = make(PyKind::Set);
      s->flag = callable->more().name == "frozenset";
      if (!a.empty()) {
        charge(a[0]->items.size() * sizeof(PyNode*), "pickled sets");
        s->items = a[0]->items;
      }
      return s;
    }
    const bool encode = is_global(callable, "_codecs", "encode");
    if (encode || builtin(callable, "bytearray") ||
        builtin(callable, "bytes")) {
      PyNode* b = nullptr;
      if (a.empty() && !encode) {
        b = make(PyKind::Bytes);
      } else if (a.size() == 1 && arg(0, PyKind::Bytes) && !encode) {
        b = make_bytes(PyKind::Bytes, a[0]->s.data(), a[0]->s.size());
      } else if (
          a.size() == 2 && arg(0, PyKind::String) && arg(1, PyKind::String)) {
        const auto& enc = a[1]->s;
        std::optional<std::string> bytes;
        if (enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1") {
          bytes = latin1(a[0]->s);
        } else if (enc == "utf-8" || enc == "utf8" || enc == "ascii") {
          bytes = a[0]->s;
        }
        if (bytes) {
          b = make_bytes(PyKind::Bytes, bytes->data(), bytes->size());
        }
      }
      if (b) {
        b->flag = callable->more().name == "bytearray";
      }
      return b;
    }
    if (is_global(callable, "torch", "Size") && a.size() == 1 &&
        arg(0, PyKind::Tuple)) {
      return a[0];
    }
    if ((is_global(callable, "copy_reg", "_reconstructor") ||
         is_global(callable, "copyreg", "_reconstructor")) &&
        a.size() == 3 && arg(0, PyKind::Global)) {
      // cls.__new__ on a base, then the base's __init__(state): keep it as
      // an opaque object of the class.
      PyNode* o = make_named(PyKind::Object, a[0]->s, a[0]->more().name);
      extra(o).args = tuple(std::vector<PyNode*>(a.begin() + 1, a.end()));
      return o;
    }
    return nullptr;
  }
  PyNode* call(PyNode* callable, PyNode* args, PyNode* kwargs) {
    if (callable->kind == PyKind::Global && !kwargs) {
      if (PyNode* made = construct(callable, args)) {
        return made;
      }
      if (call_hook_) {
        auto made = call_hook_(*this, value(callable), value(args));
        if (made) {
          return node_of(*made);
        }
      }
    }
    PyNode* o = make(PyKind::Object);
    if (callable->kind == PyKind::Global || callable->kind == PyKind::Object) {
      o->s = callable->s;
      extra(o).name = callable->more().name;
    } else {
      extra(o).name = "<call>";
    }
    if (callable->kind != PyKind::Global) {
      extra(o).callee = callable;
    }
    extra(o).args = args;
    extra(o).kwargs = kwargs;
    return o;
  }
  void build(PyNode* target, PyNode* state) {
    switch (target->kind) {
      case PyKind::Object:
      case PyKind::Dict:
        extra(target).state = state;
        break;
      case PyKind::Tensor:
        // A tensor subclass's __dict__; the tensor is what matters.
        break;
      default:
        TORCH_CHECK(false, "pickle: BUILD on a ", py_kind_name(target->kind));
    }
  }

  // ---- the interpreter ---------------------------------------------------
  PyNode* long_value(const char* p, size_t n) {
    if (n == 0) {
      return make_int(0);
    }
    const auto* u = reinterpret_cast<const uint8_t*>(p);
    const bool negative = u[n - 1] & 0x80;
    bool fits = true;
    for (size_t k = 8; k < n; ++k) {
      fits = fits && u[k] == (negative ? 0xff : 0x00);
    }
    if (n > 8) {
      fits = fits && static_cast<bool>(u[7] & 0x80) == negative;
    }
    if (!fits) {
      return make_bytes(PyKind::BigInt, p, n);
    }
    uint64_t v = negative ? ~uint64_t{0} : 0;
    for (size_t k = 0; k < n && k < 8; ++k) {
      v &= ~(uint64_t{0xff} << (8 * k));
      v |= static_cast<uint64_t>(u[k]) << (8 * k);
    }
    int64_t s;
    std::memcpy(&s, &v, sizeof s);
    return make_int(s);
  }
  PyNode* text_int(const std::string& text, const char* op) {
    std::string t = text;
    if (!t.empty() && t.back() == 'L') {
      t.pop_back();
    }
    if (t == "00" && op[0] == 'I') {
      return make_bool(false);
    }
    if (t == "01" && op[0] == 'I') {
      return make_bool(true);
    }
    int64_t v = 0;
    const char* b = t.data();
    const char* e = t.data() + t.size();
    if (b != e && *b == '+') {
      ++b;
    }
    const auto r = std::from_chars(b, e, v);
    TORCH_CHECK(
        r.ec == std::errc() && r.ptr == e && b != e,
        "pickle: ",
        op,
        " with a bad or too large integer '",
        t.substr(0, 40),
        "'");
    return make_int(v);
  }
  void memo_put(uint64_t key) {
    PyNode* n = top("PUT");
    const auto it = memo_.find(key);
    if (it != memo_.end()) {
      it->second = n;
      return;
    }
    TORCH_CHECK(
        memo_.size() < limits_.max_memo,
        "pickle: more than ",
        limits_.max_memo,
        " memo entries");
    charge(64, "the pickle's memo");
    memo_.emplace(key, n);
  }
  void memo_get(uint64_t key) {
    const auto it = memo_.find(key);
    TORCH_CHECK(it != memo_.end(), "pickle: memo key ", key, " was never set");
    push(it->second);
  }
  uint64_t length(size_t n, const char* what) {
    const uint64_t v = little(n, what);
    TORCH_CHECK(
        v <= left(),
        "pickle: ",
        what,
        " declares ",
        v,
        " bytes at offset ",
        pos_,
        " but only ",
        left(),
        " are left");
    return v;
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: { // PROTO
        const uint8_t v = byte();
        TORCH_CHECK(v <= 5, "pickle: unsupported protocol ", int(v));
        break;
      }
      case 0x95: // FRAME: a hint for buffering
        little(8, "FRAME");
        break;
      case '(':
        TORCH_CHECK(
            marks_.size() < limits_.max_stack,
            "pickle: more than ",
            limits_.max_stack,
            " marks");
        marks_.push_back(stack_.size());
        break;
      case '0':
        pop("POP");
        break;
      case '1':
        pop_mark("POP_MARK");
        break;
      case '2':
        push(top("DUP"));
        break;
      case 'N':
        push(make(PyKind::None));
        break;
      case 0x88:
        push(make_bool(true));
        break;
      case 0x89:
        push(make_bool(false));
        break;
      case 'J': { // BININT
        const auto v = static_cast<uint32_t>(little(4, "BININT"));
        int32_t s;
        std::memcpy(&s, &v, sizeof s);
        push(make_int(s));
        break;
      }
      case 'K':
        push(make_int(static_cast<int64_t>(little(1, "BININT1"))));
        break;
      case 'M':
        push(make_int(static_cast<int64_t>(little(2, "BININT2"))));
        break;
      case 0x8a: { // LONG1
        const auto n = length(1, "LONG1");
        push(long_value(take(n, "LONG1"), n));
        break;
      }
      case 0x8b: { // LONG4
        const auto n = length(4, "LONG4");
        push(long_value(take(n, "LONG4"), n));
        break;
      }
      case 'I':
        push(text_int(line("INT"), "INT"));
        break;
      case 'L':
        push(text_int(line("LONG"), "LONG"));
        break;
      case 'G': { // BINFLOAT, big-endian
        const auto* p = reinterpret_cast<const uint8_t*>(take(8, "BINFLOAT"));
        uint64_t v = 0;
        for (int k = 0; k < 8; ++k) {
          v = (v << 8) | p[k];
        }
        PyNode* n = make(PyKind::Float);
        std::memcpy(&n->f, &v, sizeof v);
        push(n);
        break;
      }
      case 'F': {
        const std::string t = line("FLOAT");
        char* end = nullptr;
        const double v = std::strtod(t.c_str(), &end);
        TORCH_CHECK(
            !t.empty() && end == t.c_str() + t.size(),
            "pickle: FLOAT with a bad value");
        PyNode* n = make(PyKind::Float);
        n->f = v;
        push(n);
        break;
      }
      case 'X': { // BINUNICODE
        const auto n = length(4, "BINUNICODE");
        push(make_bytes(PyKind::String, take(n, "BINUNICODE"), n));
        break;
      }
      case 0x8c: { // SHORT_BINUNICODE
        const auto n = length(1, "SHORT_BINUNICODE");
        push(make_bytes(PyKind::String, take(n, "SHORT_BINUNICODE"), n));
        break;
      }
      case 0x8d: { // BINUNICODE8
        const auto n = length(8, "BINUNICODE8");
        push(make_bytes(PyKind::String, take(n, "BINUNICODE8"), n));
        break;
      }
      case 'T': { // BINSTRING (Python 2 str, read as str like torch.load)
        const auto n = length(4, "BINSTRING");
        push(make_bytes(PyKind::String, take(n, "BINSTRING"), n));
        break;
      }
      case 'U': { // SHORT_BINSTRING
        const auto n = length(1, "SHORT_BINSTRING");
        push(make_bytes(PyKind::String, take(n, "SHORT_BINSTRING"), n));
        break;
      }
      case 'B': { // BINBYTES
        const auto n = length(4, "BINBYTES");
        push(make_bytes(PyKind::Bytes, take(n, "BINBYTES"), n));
        break;
      }
      case 'C': { // SHORT_BINBYTES
        const auto n = length(1, "SHORT_BINBYTES");
        push(make_bytes(PyKind::Bytes, take(n, "SHORT_BINBYTES"), n));
        break;
      }
      case 0x8e: { // BINBYTES8
        const auto n = length(8, "BINBYTES8");
        push(make_bytes(PyKind::Bytes, take(n, "BINBYTES8"), n));
        break;
      }
      case 0x96: { // BYTEARRAY8
        const auto n = length(8, "BYTEARRAY8");
        PyNode* b = make_bytes(PyKind::Bytes, take(n, "BYTEARRAY8"), n);
        b->flag = true;
        push(b);
        break;
      }
      case ']':
        push(make(PyKind::List));
        break;
      case 'l': {
        PyNode* l = make(PyKind::List);
        l->items = pop_mark("LIST");
        push(l);
        break;
      }
      case 'a': {
        PyNode* v = pop("APPEND");
        append(top("APPEND"), {v}, "APPEND");
        break;
      }
      case 'e': {
        auto items = pop_mark("APPENDS");
        append(top("APPENDS"), std::move(items), "APPENDS");
        break;
      }
      case ')':
        push(tuple({}));
        break;
      case 't':
        push(tuple(pop_mark("TUPLE")));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        const size_t n = op - 0x84;
        TORCH_CHECK(
            stack_.size() >= floor() + n,
            "pickle: TUPLE",
            n,
            " with too few values on the stack");
        std::vector<PyNode*> items(stack_.end() - n, stack_.end());
        stack_.resize(stack_.size() - n);
        push(tuple(std::move(items)));
        break;
      }
      case '}':
        push(make(PyKind::Dict));
        break;
      case 'd': {
        auto items = pop_mark("DICT");
        TORCH_CHECK(items.size() % 2 == 0, "pickle: DICT with an odd count");
        PyNode* d = make(PyKind::Dict);
        for (size_t k = 0; k < items.size(); k += 2) {
          set_item(d, items[k], items[k + 1]);
        }
        push(d);
        break;
      }
      case 's': {
        PyNode* v = pop("SETITEM");
        PyNode* k = pop("SETITEM");
        set_item(top("SETITEM"), k, v);
        break;
      }
      case 'u': {
        auto items = pop_mark("SETITEMS");
        TORCH_CHECK(
            items.size() % 2 == 0, "pickle: SETITEMS with an odd count");
        PyNode* d = top("SETITEMS");
        for (size_t k = 0; k < items.size(); k += 2) {
          set_item(d, items[k], items[k + 1]);
        }
        break;
      }
      case 0x8f:
        push(make(PyKind::Set));
        break;
      case 0x90: {
        auto items = pop_mark("ADDITEMS");
        append(top("ADDITEMS"), std::move(items), "ADDITEMS");
        break;
      }
      case 0x91: {
        PyNode* s = make(PyKind::Set);
        s->flag = true;
        s->items = pop_mark("FROZENSET");
        push(s);
        break;
      }
      case 'c': { // GLOBAL
        std::string module = line("GLOBAL module");
        std::string name = line("GLOBAL name");
        push(make_named(PyKind::Global, std::move(module), std::move(name)));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        PyNode* name = pop("STACK_GLOBAL");
        PyNode* module = pop("STACK_GLOBAL");
        TORCH_CHECK(
            name->kind == PyKind::String && module->kind == PyKind::String,
            "pickle: STACK_GLOBAL needs two str, got ",
            py_kind_name(module->kind),
            " and ",
            py_kind_name(name->kind));
        push(make_named(PyKind::Global, module->s, name->s));
        break;
      }
      case 'R': { // REDUCE
        PyNode* args = pop("REDUCE");
        PyNode* callable = pop("REDUCE");
        TORCH_CHECK(
            args->kind == PyKind::Tuple,
            "pickle: REDUCE with ",
            py_kind_name(args->kind),
            " arguments");
        push(call(callable, args, nullptr));
        break;
      }
      case 0x81: { // NEWOBJ
        PyNode* args = pop("NEWOBJ");
        PyNode* cls = pop("NEWOBJ");
        TORCH_CHECK(
            args->kind == PyKind::Tuple,
            "pickle: NEWOBJ with ",
            py_kind_name(args->kind),
            " arguments");
        push(call(cls, args, nullptr));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        PyNode* kwargs = pop("NEWOBJ_EX");
        PyNode* args = pop("NEWOBJ_EX");
        PyNode* cls = pop("NEWOBJ_EX");
        TORCH_CHECK(
            args->kind == PyKind::Tuple && kwargs->kind == PyKind::Dict,
            "pickle: NEWOBJ_EX needs a tuple and a dict");
        push(call(cls, args, kwargs->items.empty() ? nullptr : kwargs));
        break;
      }
      case 'i': { // INST
        std::string module = line("INST module");
        std::string name = line("INST name");
        PyNode* cls =
            make_named(PyKind::Global, std::move(module), std::move(name));
        push(call(cls, tuple(pop_mark("INST")), nullptr));
        break;
      }
      case 'o': { // OBJ
        auto items = pop_mark("OBJ");
        TORCH_CHECK(!items.empty(), "pickle: OBJ without a class");
        PyNode* cls = items.front();
        items.erase(items.begin());
        push(call(cls, tuple(std::move(items)), nullptr));
        break;
      }
      case 'b': { // BUILD
        PyNode* state = pop("BUILD");
        PyNode* target = top("BUILD");
        if (target->kind == PyKind::Global) {
          // BUILD on a class itself: an instance of it holding the state.
          target = make_named(PyKind::Object, target->s, target->more().name);
          stack_.back() = target;
        }
        build(target, state);
        break;
      }
      case 'p': {
        const std::string t = line("PUT");
        uint64_t key = 0;
        const auto r = std::from_chars(t.data(), t.data() + t.size(), key);
        TORCH_CHECK(
            r.ec == std::errc() && r.ptr == t.data() + t.size(),
            "pickle: PUT with a bad key");
        memo_put(key);
        break;
      }
      case 'q':
        memo_put(little(1, "BINPUT"));
        break;
      case 'r':
        memo_put(little(4, "LONG_BINPUT"));
        break;
      case 0x94:
        memo_put(memo_.size());
        break;
      case 'g': {
        const std::string t = line("GET");
        uint64_t key = 0;
        const auto r = std::from_chars(t.data(), t.data() + t.size(), key);
        TORCH_CHECK(
            r.ec == std::errc() && r.ptr == t.data() + t.size(),
            "pickle: GET with a bad key");
        memo_get(key);
        break;
      }
      case 'h':
        memo_get(little(1, "BINGET"));
        break;
      case 'j':
        memo_get(little(4, "LONG_BINGET"));
        break;
      case 'P': { // PERSID
        PyNode* pid = make(PyKind::String);
        pid->s = line("PERSID");
        persistent(pid);
        break;
      }
      case 'Q':
        persistent(pop("BINPERSID"));
        break;
      default:
        TORCH_CHECK(
            false,
            "pickle: unsupported opcode 0x",
            std::hex,
            int(op),
            std::dec,
            " at offset ",
            pos_ - 1);
    }
  }
  void persistent(PyNode* pid) {
    TORCH_CHECK(
        persistent_load_,
        "pickle: a persistent id where none is expected: ",
        value(pid).repr(80));
    push(node_of(persistent_load_(*this, value(pid))));
  }

  // Refuses cycles and nesting deeper than the limit, so that whoever walks
  // the result may recurse.
  void check_tree(PyNode* root) {
    struct Frame {
      PyNode* node;
      size_t next;
    };
    auto child_at = [](const PyNode* n, size_t k) -> PyNode* {
      if (k < n->items.size()) {
        return n->items[k];
      }
      k -= n->items.size();
      const PyExtra& e = n->more();
      PyNode* extra[] = {e.args, e.kwargs, e.callee, e.state, e.appended};
      return k < 5 ? extra[k] : nullptr;
    };
    std::vector<Frame> path{{root, 0}};
    root->color = 1;
    while (!path.empty()) {
      Frame& f = path.back();
      const size_t count = f.node->items.size() + 5;
      if (f.next == count) {
        f.node->color = 2;
        const uint32_t h = f.node->height + 1;
        path.pop_back();
        if (!path.empty()) {
          path.back().node->height = std::max(path.back().node->height, h);
        }
        continue;
      }
      PyNode* c = child_at(f.node, f.next++);
      if (!c) {
        continue;
      }
      TORCH_CHECK(c->color != 1, "pickle: the data refers to itself (a cycle)");
      if (c->color == 2) {
        f.node->height = std::max(f.node->height, c->height + 1);
        continue;
      }
      TORCH_CHECK(
          path.size() < limits_.max_depth,
          "pickle: values nested deeper than ",
          limits_.max_depth,
          " levels");
      c->color = 1;
      path.push_back({c, 0});
    }
  }

  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  PersistentLoad persistent_load_;
  CallHook call_hook_;
  PickleLimits limits_;
  std::unique_ptr<ReadBudget> own_budget_;
  ReadBudget* budget_;
  std::shared_ptr<PyArena> arena_;
  std::vector<PyNode*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyNode*> memo_;
};

/// Reads one pickle that needs no persistent ids or hooks.
inline PyValue unpickle(const char* data, size_t size) {
  return Unpickler(data, size).parse();
}

/// Writes pickles of protocol 2 opcode by opcode; globals are memoized.
class Pickler {
 public:
  Pickler() {
    out_ += "\x80\x02";
  }
  void none() {
    out_ += 'N';
  }
  void boolean(bool v) {
    out_ += v ? '\x88' : '\x89';
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';
      raw(v, 1);
    } else if (v >= 0 && v < 65536) {
      out_ += 'M';
      raw(v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += 'J';
      raw(static_cast<uint64_t>(v), 4);
    } else {
      out_ += "\x8a\x08";
      raw(static_cast<uint64_t>(v), 8);
    }
  }
  void floating(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    out_ += 'G';
    for (int k = 7; k >= 0; --k) {
      out_ += static_cast<char>((bits >> (8 * k)) & 0xff);
    }
  }
  void string(const std::string& s) {
    TORCH_CHECK(s.size() <= UINT32_MAX, "pickle: str too long");
    out_ += 'X';
    raw(s.size(), 4);
    out_ += s;
  }
  void global(const std::string& module, const std::string& name) {
    const std::string key = module + "\n" + name + "\n";
    const auto it = memo_.find(key);
    if (it != memo_.end()) {
      get(it->second);
      return;
    }
    out_ += 'c';
    out_ += key;
    const uint32_t slot = static_cast<uint32_t>(memo_.size());
    memo_.emplace(key, slot);
    if (slot < 256) {
      out_ += 'q';
      raw(slot, 1);
    } else {
      out_ += 'r';
      raw(slot, 4);
    }
  }
  void mark() {
    out_ += '(';
  }
  /// A tuple of everything since the last mark.
  void tuple() {
    out_ += 't';
  }
  void empty_tuple() {
    out_ += ')';
  }
  void empty_dict() {
    out_ += '}';
  }
  void reduce() {
    out_ += 'R';
  }
  void binpersid() {
    out_ += 'Q';
  }
  void setitems() {
    out_ += 'u';
  }
  void build() {
    out_ += 'b';
  }
  /// Ends the pickle and returns its bytes.
  std::string finish() {
    out_ += '.';
    return std::move(out_);
  }

 private:
  void raw(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) {
      out_ += static_cast<char>((v >> (8 * k)) & 0xff);
    }
  }
  void get(uint32_t slot) {
    if (slot < 256) {
      out_ += 'h';
      raw(slot, 1);
    } else {
      out_ += 'j';
      raw(slot, 4);
    }
  }

  std::string out_;
  std::unordered_map<std::string, uint32_t> memo_;
};

} // namespace resnet::detail
