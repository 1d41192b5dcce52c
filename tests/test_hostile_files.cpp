// Weight files built to attack the readers (tests/python/make_hostile_files.py,
// run before the tests): each is read by inspect_checkpoint,
// read_state_dict and load_state_dict in a child process of its own
// (resnet_read_bounded) under a watchdog and an address-space limit. No file
// may crash the reader, hang it, run code, or make it hold more memory than
// kReadMemoryPerByte times its size plus kReadMemoryFixed; each call must
// end as the manifest says, with an error message of bounded length. One
// test per class of attack; a table of every file's time and peak memory is
// written to work/hostile_files.tsv.

#include "test_support.h"

#include <resnet/io/detail/read_budget.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_hostile_files {

namespace {

namespace fs = std::filesystem;
using resnet_test::contains;

const fs::path kCorpus = fs::path(RESNET_FIXTURE_DIR) / "hostile_files";
// Longest error message a call may give, whatever the file holds.
constexpr size_t kMaxMessage = 4200;
// Longest a child may take for the three calls (a file read in proportion
// to its size takes well under a second; the sanitizer build is slower).
constexpr double kWatchdogSeconds = 120;

const nlohmann::json& manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(kCorpus / "manifest.json");
    return in ? nlohmann::json::parse(in) : nlohmann::json::object();
  }();
  return m;
}

// Whether `message` holds one of the '|'-separated parts of `wanted`.
bool matches(const std::string& message, const std::string& wanted) {
  size_t start = 0;
  while (start <= wanted.size()) {
    const auto end = std::min(wanted.find('|', start), wanted.size());
    if (contains(message, wanted.substr(start, end - start))) {
      return true;
    }
    start = end + 1;
  }
  return false;
}

std::mutex table_mutex;

// Reads every file of `kind` in a child process and checks what each call
// did against the manifest.
void check_class(const std::string& kind) {
  ASSERT_TRUE(manifest().contains("files"))
      << "no manifest in " << kCorpus << " (make_hostile_files.py not run?)";
  const fs::path work = resnet_test::work_dir("hostile_" + kind);
  size_t checked = 0;
  std::ostringstream table;
  for (const auto& file : manifest()["files"]) {
    if (file["class"] != kind) {
      continue;
    }
    const std::string name = file["file"];
    SCOPED_TRACE(name + ": " + file["about"].get<std::string>());
    std::vector<std::string> args = {
        RESNET_READ_BOUNDED, (kCorpus / name).string()};
    const auto keys = file.value("keys", nlohmann::json::array());
    for (const auto& key : keys) {
      args.push_back(key);
    }
    resnet_test::ChildProcess child;
    ASSERT_EQ(child.start(args, work / (name + ".log")), "");
    const bool finished =
        child.wait(std::chrono::duration<double>(kWatchdogSeconds));
    const std::string output = child.output();
    ASSERT_TRUE(finished) << "still running after " << kWatchdogSeconds
                          << " s (killed):\n"
                          << output;
    ASSERT_TRUE(child.exited_ok()) << child.how_it_ended() << ":\n" << output;
    if (file.contains("absent")) {
      EXPECT_FALSE(contains(output, file["absent"])) << "the file ran code:\n"
                                                     << output;
    }
    nlohmann::json header;
    std::map<std::string, nlohmann::json> calls;
    std::istringstream lines(output);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty() || line[0] != '{') {
        continue;
      }
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) {
        continue;
      }
      if (j.contains("call")) {
        calls[j["call"]] = j;
      } else if (j.contains("size")) {
        header = j;
      }
    }
    ASSERT_FALSE(header.is_null()) << output;
    const uint64_t size = header["size"];
    const int64_t allowed = header["allowed"];
    double seconds = 0;
    int64_t peak = 0;
    for (const char* call : {"inspect", "read", "load"}) {
      SCOPED_TRACE(call);
      ASSERT_TRUE(calls.count(call)) << output;
      const auto& c = calls[call];
      const std::string expect = file["expect"][call];
      const std::string error = c.value("error", "");
      EXPECT_FALSE(c.value("foreign", false)) << error;
      EXPECT_LE(error.size(), kMaxMessage) << error.substr(0, 400);
      if (expect == "ok") {
        EXPECT_TRUE(c["ok"].get<bool>()) << error.substr(0, 1000);
      } else if (expect.rfind("error:", 0) == 0) {
        EXPECT_FALSE(c["ok"].get<bool>());
        EXPECT_TRUE(matches(error, expect.substr(6)))
            << "expected '" << expect.substr(6)
            << "', got: " << error.substr(0, 1000);
      }
      if (!header["sanitized"].get<bool>()) {
        EXPECT_LE(c["peak"].get<int64_t>(), allowed)
            << "held " << c["peak"].get<int64_t>() << " bytes for a file of "
            << size;
      }
      seconds = std::max(seconds, c["seconds"].get<double>());
      peak = std::max(peak, c["peak"].get<int64_t>());
    }
    if (std::string(file["expect"]["read"]) == "ok") {
      const auto& read = calls["read"];
      for (const auto& key : keys) {
        EXPECT_TRUE(read.contains("values") && read["values"].contains(key))
            << "no tensor '" << key.get<std::string>() << "'";
      }
    }
    // The values read, and loaded (through the mapped file), where the
    // manifest gives them.
    const auto values = file.value("values", nlohmann::json::object());
    for (const char* call : {"read", "load"}) {
      for (const auto& [key, value] : values.items()) {
        const auto& got = calls[call];
        EXPECT_TRUE(got.contains("values") && got["values"].contains(key))
            << call << ": no tensor '" << key << "'";
        if (got.contains("values")) {
          EXPECT_EQ(got["values"].value(key, -1.0), value.get<double>())
              << call << ": " << key;
        }
      }
    }
    table << name << "\t" << kind << "\t" << size << "\t" << seconds << "\t"
          << peak << "\t"
          << (size ? static_cast<double>(peak) / static_cast<double>(size) : 0)
          << "\t"
          << (calls["read"]["ok"].get<bool>()
                  ? "read"
                  : calls["read"].value("error", "").substr(0, 100))
          << "\n";
    ++checked;
  }
  EXPECT_GT(checked, 0u) << "no file of class " << kind;
  std::lock_guard<std::mutex> lock(table_mutex);
  std::ofstream(
      fs::path(RESNET_TEST_WORK_DIR) / ("hostile_files_" + kind + ".tsv"))
      << "file\tclass\tbytes\tseconds\tpeak_bytes\tpeak_per_byte\tread\n"
      << table.str();
}

TEST(HostileFiles, NestingCannotOverflowTheStack) {
  check_class("recursion");
}

TEST(HostileFiles, TorchScriptArchivesRunNoCode) {
  check_class("torchscript-code");
}

TEST(HostileFiles, NothingHangs) {
  check_class("hang");
}

TEST(HostileFiles, MemoryStaysInProportionToTheFile) {
  check_class("memory");
}

TEST(HostileFiles, AmbiguousArchivesAreRefused) {
  check_class("ambiguous");
}

TEST(HostileFiles, TheCorpusCoversEveryClass) {
  ASSERT_TRUE(manifest().contains("files"));
  std::map<std::string, size_t> count;
  for (const auto& file : manifest()["files"]) {
    ++count[file["class"]];
  }
  for (const char* kind :
       {"recursion", "torchscript-code", "hang", "memory", "ambiguous"}) {
    EXPECT_GE(count[kind], 2u) << kind;
  }
}

} // namespace

} // namespace test_hostile_files
