#pragma once

// Python's pickle format written in the small subset torch.save needs.

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>

namespace resnet::detail {

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
