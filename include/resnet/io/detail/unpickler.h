#pragma once

// Python's pickle format read into a tree of plain values. The reader
// handles protocols 2 to 5 (and the text opcodes they still use) and never
// executes anything: a global is kept by name, and calling one makes an
// opaque object that holds the name, the arguments and the state, unless it
// is one of a few data constructors (OrderedDict, set, bytes through
// _codecs.encode, ...) or the caller's hook builds it (tensors). Every
// length, index and size is checked against the input and against fixed
// limits, and everything the tree takes is charged to the read's budget
// (see read_budget.h); any problem is a c10::Error saying what was wrong.

#include <resnet/io/detail/pickle_value.h>
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

} // namespace resnet::detail
