#pragma once

// What every fuzz target shares: errors the library raises on purpose are
// the expected outcome for malformed input; anything else (a crash, a
// sanitizer report, another exception type escaping) is a finding.

#include <c10/util/Exception.h>

#include <unistd.h>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace resnet_fuzz {

/// Runs `f`, accepting the `c10::Error`s that report bad input.
template <class F>
void expect_clean_error(F&& f) {
  try {
    f();
  } catch (const c10::Error&) {
  }
}

/// A file in the RAM-backed temporary folder holding `data`, removed when
/// the object goes: for readers that take a path.
class TempFile {
 public:
  TempFile(const uint8_t* data, size_t size) {
    const char* dir = std::getenv("TMPDIR");
    path_ = std::string(dir ? dir : "/tmp") + "/resnet_fuzz_" +
        std::to_string(::getpid());
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr || (size && std::fwrite(data, 1, size, f) != size)) {
      std::abort();
    }
    std::fclose(f);
  }
  ~TempFile() {
    std::remove(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const {
    return path_;
  }

 private:
  std::string path_;
};

} // namespace resnet_fuzz
