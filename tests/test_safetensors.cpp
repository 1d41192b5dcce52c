// safetensors: files written by Python's safetensors.torch.save_file read bit
// for bit (tests/python/make_safetensors_files.py), our files byte for byte
// the same as Python's, round trips for every dtype, and malformed files
// refused with an error that says what is wrong. Python reading our files is
// checked by tests/python/check_safetensors_writer.py, which runs
// SafetensorsWriter.ForPython.

#include "test_support.h"

#include <resnet/io/safetensors.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_safetensors {

namespace {

namespace fs = std::filesystem;
using resnet_test::contains;
using resnet_test::error_of;
using Json = nlohmann::json;

fs::path fixture(const std::string& name) {
  return fs::path(RESNET_FIXTURE_DIR) / "safetensors_files" / name;
}

std::string read_bytes(const fs::path& path) {
  const auto v = resnet::read_file(path.string());
  return std::string(v.begin(), v.end());
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

Json manifest() {
  return Json::parse(read_bytes(fixture("manifest.json")));
}

// The raw bytes of a CPU tensor's elements.
std::string bytes_of(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return std::string(
      static_cast<const char*>(c.data_ptr()),
      static_cast<size_t>(c.numel() * c.element_size()));
}

// What each dtype code must become, by LibTorch's own name for the type
// (written out here rather than taken from the table under test).
const std::map<std::string, std::string>& expected_types() {
  static const std::map<std::string, std::string> m = {
      {"BOOL", "Bool"},
      {"F4", "Float4_e2m1fn_x2"},
      {"U8", "Byte"},
      {"I8", "Char"},
      {"F8_E5M2", "Float8_e5m2"},
      {"F8_E4M3", "Float8_e4m3fn"},
      {"F8_E8M0", "Float8_e8m0fnu"},
      {"F8_E4M3FNUZ", "Float8_e4m3fnuz"},
      {"F8_E5M2FNUZ", "Float8_e5m2fnuz"},
      {"I16", "Short"},
      {"U16", "UInt16"},
      {"F16", "Half"},
      {"BF16", "BFloat16"},
      {"I32", "Int"},
      {"U32", "UInt32"},
      {"F32", "Float"},
      {"C64", "ComplexFloat"},
      {"F64", "Double"},
      {"I64", "Long"},
      {"U64", "UInt64"},
  };
  return m;
}

std::string type_name(const torch::Tensor& t) {
  return c10::toString(t.scalar_type());
}

// A file with the given header text and `data_size` bytes of data; the
// length field says `length` (default: the header's true length).
std::string file_with(
    const std::string& header,
    size_t data_size = 0,
    int64_t length = -1) {
  uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  }
  return out + header + std::string(data_size, '\x01');
}

resnet::SafetensorsFile parse(const std::string& bytes) {
  return resnet::detail::parse_safetensors(bytes.data(), bytes.size());
}

// Every byte of `t` from a seeded generator (0/1 for bool).
torch::Tensor random_tensor(
    c10::ScalarType type,
    std::vector<int64_t> sizes,
    std::mt19937& gen) {
  auto t = at::empty(sizes, at::TensorOptions().dtype(type));
  auto* p = static_cast<unsigned char*>(t.data_ptr());
  const auto n = static_cast<size_t>(t.numel() * t.element_size());
  for (size_t i = 0; i < n; ++i) {
    p[i] = static_cast<unsigned char>(gen() & 0xff);
    if (type == at::kBool) {
      p[i] &= 1;
    }
  }
  return t;
}

// The tensors ForPython writes, which check_safetensors_writer.py rebuilds:
// per dtype, shape [3, 4] (LibTorch shape [3, 2] for F4) with byte i equal
// to (37 i + 11 order + 5) mod 256 (its low bit for BOOL).
resnet::StateDict pattern_tensors() {
  resnet::StateDict out;
  for (const auto& d : resnet::detail::safetensors_dtypes()) {
    const std::vector<int64_t> sizes =
        d.bits == 4 ? std::vector<int64_t>{3, 2} : std::vector<int64_t>{3, 4};
    auto t = at::empty(sizes, at::TensorOptions().dtype(d.type));
    auto* p = static_cast<unsigned char*>(t.data_ptr());
    const auto n = static_cast<size_t>(t.numel() * t.element_size());
    for (size_t i = 0; i < n; ++i) {
      p[i] = static_cast<unsigned char>((37 * i + 11 * d.order + 5) & 0xff);
      if (d.type == at::kBool) {
        p[i] &= 1;
      }
    }
    out.emplace_back(std::string("p_") + d.name, t);
  }
  out.emplace_back(
      "transposed", torch::arange(12, torch::kFloat32).reshape({3, 4}).t());
  out.emplace_back("scalar", torch::tensor(2.5, torch::kFloat64));
  out.emplace_back("empty", torch::zeros({0, 3}, torch::kInt32));
  return out;
}

TEST(SafetensorsRead, PythonFilesBitwise) {
  const auto m = manifest();
  // Exactly the dtypes the paired torch has: the version guards are right.
  std::vector<std::string> ours;
  for (const auto& d : resnet::detail::safetensors_dtypes()) {
    ours.push_back(d.name);
  }
  EXPECT_EQ(ours, m["dtypes"].get<std::vector<std::string>>())
      << "torch " << m["torch"].get<std::string>();

  for (const auto& item : m["files"].items()) {
    SCOPED_TRACE(item.key());
    const auto& spec = item.value();
    const auto raw = read_bytes(fixture(spec["raw"].get<std::string>()));
    const auto file = resnet::read_safetensors(fixture(item.key()).string());
    const auto from_memory = parse(read_bytes(fixture(item.key())));
    EXPECT_EQ(
        file.metadata,
        (spec["metadata"].get<std::map<std::string, std::string>>()));
    EXPECT_EQ(from_memory.metadata, file.metadata);
    const auto& tensors = spec["tensors"];
    ASSERT_EQ(file.tensors.size(), tensors.size());
    ASSERT_EQ(from_memory.tensors.size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& want = tensors[i];
      const auto& got = file.tensors[i];
      SCOPED_TRACE(want["name"].get<std::string>());
      EXPECT_EQ(got.first, want["name"].get<std::string>());
      EXPECT_EQ(
          type_name(got.second),
          expected_types().at(want["dtype"].get<std::string>()));
      EXPECT_EQ(
          got.second.sizes().vec(), want["shape"].get<std::vector<int64_t>>());
      EXPECT_TRUE(got.second.device().is_cpu());
      EXPECT_TRUE(got.second.is_contiguous());
      const auto expected = raw.substr(
          want["offset"].get<size_t>(), want["nbytes"].get<size_t>());
      EXPECT_TRUE(bytes_of(got.second) == expected);
      EXPECT_EQ(from_memory.tensors[i].first, got.first);
      EXPECT_TRUE(bytes_of(from_memory.tensors[i].second) == expected);
      // Its own memory, not a view into a file-sized buffer.
      EXPECT_EQ(
          got.second.storage().nbytes(),
          static_cast<size_t>(got.second.numel() * got.second.element_size()));
    }
  }
}

TEST(SafetensorsRead, TorchvisionResNet18LoadsStrictly) {
  const auto file =
      resnet::read_safetensors(fixture("model.safetensors").string());
  auto model = resnet::resnet18();
  const auto report = resnet::load_state_dict(model, file.tensors);
  EXPECT_EQ(report.loaded.size(), file.tensors.size());
  EXPECT_TRUE(report.missing.empty());
}

TEST(SafetensorsWrite, SameBytesAsPython) {
  // One metadata key at most: Python's writer orders several keys by hash.
  for (const char* name :
       {"all_dtypes.safetensors", "empty.safetensors", "model.safetensors"}) {
    SCOPED_TRACE(name);
    const auto python = read_bytes(fixture(name));
    auto file = resnet::read_safetensors(fixture(name).string());
    const auto ours =
        resnet::detail::safetensors_bytes(file.tensors, file.metadata);
    EXPECT_TRUE(std::string(ours.begin(), ours.end()) == python);
    // The order tensors are given in does not matter.
    std::reverse(file.tensors.begin(), file.tensors.end());
    const auto reversed =
        resnet::detail::safetensors_bytes(file.tensors, file.metadata);
    EXPECT_TRUE(reversed == ours);
  }
  // With several metadata keys: the same header as JSON, the same data.
  const auto python = read_bytes(fixture("special.safetensors"));
  const auto file =
      resnet::read_safetensors(fixture("special.safetensors").string());
  const auto v = resnet::detail::safetensors_bytes(file.tensors, file.metadata);
  const std::string ours(v.begin(), v.end());
  ASSERT_EQ(ours.size(), python.size());
  const size_t n = resnet::detail::read_le64(python.data());
  EXPECT_EQ(resnet::detail::read_le64(ours.data()), n);
  EXPECT_EQ(Json::parse(ours.substr(8, n)), Json::parse(python.substr(8, n)));
  EXPECT_TRUE(ours.substr(8 + n) == python.substr(8 + n));
}

TEST(SafetensorsWrite, RoundTripEveryDtype) {
  const auto dir = resnet_test::work_dir("safetensors_round_trip");
  std::mt19937 gen(7);
  resnet::StateDict state;
  for (const auto& d : resnet::detail::safetensors_dtypes()) {
    const std::string code = d.name;
    state.emplace_back("m_" + code, random_tensor(d.type, {2, 4}, gen));
    if (d.bits != 4) {
      state.emplace_back("s_" + code, random_tensor(d.type, {}, gen));
    }
    state.emplace_back("e_" + code, random_tensor(d.type, {0, 2}, gen));
  }
  state.emplace_back(
      "noncontiguous",
      torch::arange(24, torch::kFloat64).reshape({2, 3, 4}).permute({2, 0, 1}));
  state.emplace_back(
      "conjugate",
      torch::complex(torch::ones({3}), torch::full({3}, 2.0f)).conj());
  state.emplace_back("needs_grad", torch::ones({2}, torch::requires_grad()));
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "r\xc3\xa9seau"}, {"empty", ""}};
  const auto path = (dir / "all.safetensors").string();
  resnet::save_safetensors(state, path, metadata);
  const auto back = resnet::read_safetensors(path);
  EXPECT_EQ(back.metadata, metadata);
  ASSERT_EQ(back.tensors.size(), state.size());
  std::map<std::string, torch::Tensor> by_name(
      back.tensors.begin(), back.tensors.end());
  for (const auto& item : state) {
    SCOPED_TRACE(item.first);
    ASSERT_EQ(by_name.count(item.first), 1u);
    const auto& got = by_name.at(item.first);
    EXPECT_EQ(got.scalar_type(), item.second.scalar_type());
    EXPECT_EQ(got.sizes(), item.second.sizes());
    EXPECT_TRUE(
        bytes_of(got) ==
        bytes_of(item.second.detach().resolve_conj().contiguous()));
  }
  EXPECT_TRUE(torch::equal(
      by_name.at("conjugate"),
      torch::complex(torch::ones({3}), torch::full({3}, -2.0f))));
  // The file order: widest dtype first, then by name.
  std::vector<int> orders;
  for (const auto& item : back.tensors) {
    orders.push_back(
        resnet::detail::safetensors_dtype(item.second.scalar_type())->order);
  }
  EXPECT_TRUE(std::is_sorted(orders.rbegin(), orders.rend()));
}

TEST(SafetensorsWrite, HeaderLayout) {
  const resnet::StateDict state = {
      {"b", torch::ones({3})}, {"a", torch::zeros({2}, torch::kInt64)}};
  const auto v = resnet::detail::safetensors_bytes(state, {});
  const std::string bytes(v.begin(), v.end());
  const size_t n = resnet::detail::read_le64(bytes.data());
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 3 * 4 + 2 * 8);
  const auto header = bytes.substr(8, n);
  EXPECT_EQ(
      header.substr(0, header.find_last_not_of(' ') + 1),
      R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})");
  EXPECT_FALSE(contains(header, "__metadata__"));
  const auto with_meta = resnet::detail::safetensors_bytes(state, {{"k", "v"}});
  EXPECT_TRUE(contains(
      std::string(with_meta.begin(), with_meta.end()),
      R"({"__metadata__":{"k":"v"},"a":)"));
  EXPECT_TRUE(resnet::detail::safetensors_bytes(state, {}) == v);
}

TEST(SafetensorsWrite, RefusesWhatTheFormatCannotHold) {
  const auto dir = resnet_test::work_dir("safetensors_refuses");
  const auto path = (dir / "x.safetensors").string();
  auto refuse = [&](const resnet::StateDict& state,
                    const std::map<std::string, std::string>& metadata) {
    const auto e =
        error_of([&] { resnet::save_safetensors(state, path, metadata); });
    EXPECT_TRUE(contains(e, "'" + path + "'")) << e;
    EXPECT_FALSE(fs::exists(path));
    return e;
  };
  const auto ok = torch::ones({2});
  EXPECT_TRUE(
      contains(refuse({{"a", torch::Tensor()}}, {}), "'a' is undefined"));
  EXPECT_TRUE(
      contains(refuse({{"a", ok}, {"a", ok}}, {}), "'a' is given twice"));
  EXPECT_TRUE(contains(
      refuse({{"a", ok}, {"a", ok.to(torch::kInt8)}}, {}), "given twice"));
  EXPECT_TRUE(contains(refuse({{"__metadata__", ok}}, {}), "cannot be named"));
  EXPECT_TRUE(contains(
      refuse({{"c", torch::ones({2}, torch::kComplexDouble)}}, {}),
      "'c' has dtype ComplexDouble, which safetensors cannot hold"));
  EXPECT_TRUE(contains(refuse({{"bad\xff", ok}}, {}), "not valid UTF-8"));
  EXPECT_TRUE(
      contains(refuse({{"a", ok}}, {{"k", "\xc3"}}), "not valid UTF-8"));
  EXPECT_TRUE(
      contains(refuse({{"s", ok.to_sparse()}}, {}), "dense tensors only"));
}

struct BadFile {
  const char* what;
  std::string bytes;
  const char* error;
};

std::vector<BadFile> bad_files() {
  const std::string f32 = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  auto one = [](const std::string& info) { return "{\"a\":" + info + "}"; };
  return {
      {"empty file", "", "too short for the 8-byte header length"},
      {"7 bytes", std::string(7, '\0'), "too short"},
      {"huge length", file_with("{}", 0, 200000000), "over the limit"},
      {"length 2^64-1",
       file_with("{}", 0, -1).replace(0, 8, 8, '\xff'),
       "over the limit"},
      {"length past the end", file_with("{}", 0, 1000), "runs past the end"},
      {"bad JSON", file_with("{not json"), "not valid JSON"},
      {"empty header", file_with(""), "not valid JSON"},
      {"trailing garbage", file_with("{} x"), "not valid JSON"},
      {"bad UTF-8 key", file_with("{\"\xff\":1}"), "not valid JSON"},
      {"array", file_with("[]"), "not a JSON object"},
      {"entry not an object", file_with(R"({"a":5})"), "expected an object"},
      {"no dtype",
       file_with(one(R"({"shape":[],"data_offsets":[0,0]})")),
       "'a' has no 'dtype'"},
      {"no shape",
       file_with(one(R"({"dtype":"F32","data_offsets":[0,0]})")),
       "has no 'shape'"},
      {"no offsets",
       file_with(one(R"({"dtype":"F32","shape":[]})")),
       "has no 'data_offsets'"},
      {"dtype not a string",
       file_with(one(R"({"dtype":4,"shape":[],"data_offsets":[0,4]})"), 4),
       "dtype is not a string"},
      {"shape not a list",
       file_with(one(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), 8),
       "shape is not a list"},
      {"negative dimension",
       file_with(
           one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), 8),
       "is negative"},
      {"fractional dimension",
       file_with(
           one(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})"), 8),
       "not a non-negative integer"},
      {"dimension beyond uint64",
       file_with(
           one(R"({"dtype":"F32","shape":[99999999999999999999999],)"
               R"("data_offsets":[0,8]})"),
           8),
       "not a non-negative integer"},
      {"overflowing shape",
       file_with(
           one(R"({"dtype":"F32","shape":[4294967296,4294967296,4],)"
               R"("data_offsets":[0,8]})"),
           8),
       "is too large"},
      {"dimension beyond int64",
       file_with(
           one(R"({"dtype":"U8","shape":[18446744073709551615],)"
               R"("data_offsets":[0,8]})"),
           8),
       "is too large"},
      {"one offset",
       file_with(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8]})"), 8),
       "data_offsets is not a list [begin, end]"},
      {"negative offset",
       file_with(
           one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), 8),
       "data_offsets[0] is negative"},
      {"end before begin",
       file_with(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), 8),
       "end before they begin"},
      {"end past the data",
       file_with(
           one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,800]})"), 8),
       "reach past the 8 bytes of data"},
      {"size mismatch",
       file_with(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"), 4),
       "hold 4 bytes, but F32 of shape [2] takes 8"},
      {"unknown dtype",
       file_with(one(R"({"dtype":"F17","shape":[2],"data_offsets":[0,8]})"), 8),
       "'a': unknown dtype 'F17'"},
      {"dtype LibTorch lacks",
       file_with(
           one(R"({"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]})"), 3),
       "has no type for dtype 'F6_E2M3'"},
      {"overlap",
       file_with(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           12),
       "'b' at bytes [4, 12) overlaps tensor 'a'"},
      {"same range twice",
       file_with(R"({"a":)" + f32 + R"(,"b":)" + f32 + "}", 8),
       "overlaps"},
      {"hole",
       file_with(
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
           12),
       "bytes [4, 8) before tensor 'b' belong to no tensor"},
      {"hole at the start",
       file_with(one(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), 8),
       "bytes [0, 4) before tensor 'a' belong to no tensor"},
      {"bytes after the last tensor",
       file_with(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), 8),
       "the tensors cover 4 bytes, but the file holds 8"},
      {"duplicate name",
       file_with(R"({"a":)" + f32 + R"(,"a":)" + f32 + "}", 8),
       "the key 'a' twice"},
      {"duplicate field",
       file_with(
           one(R"({"dtype":"F32","dtype":"F32","shape":[2],)"
               R"("data_offsets":[0,8]})"),
           8),
       "the key 'dtype' twice"},
      {"metadata not an object",
       file_with(R"({"__metadata__":[]})"),
       "__metadata__ is not an object"},
      {"metadata value not a string",
       file_with(R"({"__metadata__":{"k":1}})"),
       "__metadata__['k'] is not a string"},
      {"deep nesting",
       file_with(
           one(R"({"dtype":"F32","shape":[[2]],"data_offsets":[0,8]})"), 8),
       "nests deeper than the format allows"},
      {"very deep nesting",
       file_with("{\"a\":" + std::string(100000, '[')),
       "nests deeper than the format allows"},
  };
}

TEST(SafetensorsRead, RefusesMalformedFiles) {
  const auto dir = resnet_test::work_dir("safetensors_malformed");
  int i = 0;
  for (const auto& bad : bad_files()) {
    SCOPED_TRACE(bad.what);
    const auto e = error_of([&] { parse(bad.bytes); });
    EXPECT_TRUE(contains(e, "invalid safetensors data")) << e;
    EXPECT_TRUE(contains(e, bad.error)) << e;
    const auto path = (dir / ("bad" + std::to_string(i++))).string();
    write_bytes(path, bad.bytes);
    const auto from_file = error_of([&] { resnet::read_safetensors(path); });
    EXPECT_TRUE(
        contains(from_file, "cannot read safetensors file '" + path + "': "))
        << from_file;
    EXPECT_TRUE(contains(from_file, bad.error)) << from_file;
  }
  const auto missing = (dir / "missing.safetensors").string();
  EXPECT_TRUE(contains(
      error_of([&] { resnet::read_safetensors(missing); }),
      "'" + missing + "': cannot open it"));
}

TEST(SafetensorsRead, AcceptsWhatTheReferenceAccepts) {
  // Padding either side of the JSON, null metadata, unknown fields, entries
  // listed out of offset order, no tensors at all.
  const auto file = parse(file_with(
      R"(  {"__metadata__":null,"b":{"dtype":"I8","shape":[2],)"
      R"("data_offsets":[2,4],"extra":[1]},)"
      R"("a":{"dtype":"U8","shape":[1,2],"data_offsets":[0,2]}}   )",
      4));
  EXPECT_TRUE(file.metadata.empty());
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].first, "a");
  EXPECT_EQ(file.tensors[0].second.sizes(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(file.tensors[1].first, "b");
  EXPECT_EQ(file.tensors[1].second.scalar_type(), torch::kInt8);
  EXPECT_TRUE(parse(file_with("{}")).tensors.empty());
  if (resnet::detail::safetensors_dtype("F4")) {
    EXPECT_TRUE(contains(
        error_of([] {
          parse(file_with(
              R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", 1));
        }),
        "do not fill whole bytes"));
    // Two F4 elements a byte: LibTorch's last dimension is half the header's.
    const auto f4 = parse(file_with(
        R"({"a":{"dtype":"F4","shape":[2,3,2],"data_offsets":[0,6]}})", 6));
    EXPECT_EQ(f4.tensors.at(0).second.sizes(), (std::vector<int64_t>{2, 3, 1}));
  }
}

TEST(SafetensorsRead, EveryTruncationThrows) {
  const auto whole = read_bytes(fixture("all_dtypes.safetensors"));
  for (size_t cut = 0; cut < whole.size(); ++cut) {
    const auto e = error_of([&] { parse(whole.substr(0, cut)); });
    ASSERT_TRUE(contains(e, "invalid safetensors data")) << "cut at " << cut;
  }
  const auto dir = resnet_test::work_dir("safetensors_truncated");
  const size_t n = resnet::detail::read_le64(whole.data());
  for (size_t cut : {size_t{3}, size_t{8}, n / 2, 8 + n, whole.size() - 1}) {
    const auto path = (dir / std::to_string(cut)).string();
    write_bytes(path, whole.substr(0, cut));
    EXPECT_TRUE(
        contains(error_of([&] { resnet::read_safetensors(path); }), path));
  }
}

TEST(SafetensorsRead, BitFlipsInTheHeaderLoadOrThrow) {
  const auto whole = read_bytes(fixture("all_dtypes.safetensors"));
  const size_t n = resnet::detail::read_le64(whole.data());
  int loaded = 0;
  int refused = 0;
  for (size_t byte = 0; byte < 8 + n; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bytes = whole;
      bytes[byte] = static_cast<char>(bytes[byte] ^ (1 << bit));
      try {
        parse(bytes);
        ++loaded;
      } catch (const c10::Error&) {
        ++refused;
      }
    }
  }
  // Most flips break the header; some (inside names, or padding) do not.
  EXPECT_GT(loaded, 0);
  EXPECT_GT(refused, loaded);
}

TEST(SafetensorsFormat, LooksLikeSafetensors) {
  using resnet::detail::looks_like_safetensors;
  for (const char* name :
       {"all_dtypes.safetensors", "empty.safetensors", "special.safetensors"}) {
    const auto bytes = read_bytes(fixture(name));
    EXPECT_TRUE(looks_like_safetensors(bytes.data(), bytes.size())) << name;
  }
  const std::string zip = "PK\x03\x04" + std::string(60, '\0');
  EXPECT_FALSE(looks_like_safetensors(zip.data(), zip.size()));
  const std::string pickle = "\x80\x02}q\x00(X" + std::string(60, 'a');
  EXPECT_FALSE(looks_like_safetensors(pickle.data(), pickle.size()));
  EXPECT_FALSE(looks_like_safetensors(nullptr, 0));
  const auto short_file = file_with("{}", 0, 100);
  EXPECT_FALSE(looks_like_safetensors(short_file.data(), short_file.size()));
  const auto array = file_with("[]");
  EXPECT_FALSE(looks_like_safetensors(array.data(), array.size()));
}

// Writes files for tests/python/check_safetensors_writer.py to read with
// safetensors.torch.load_file.
TEST(SafetensorsWriter, ForPython) {
  const char* dir = std::getenv("RESNET_SAFETENSORS_EXPORT_DIR");
  if (dir == nullptr || *dir == '\0') {
    GTEST_SKIP() << "run by tests/python/check_safetensors_writer.py, which "
                    "sets RESNET_SAFETENSORS_EXPORT_DIR";
  }
  const fs::path out(dir);
  fs::create_directories(out);
  resnet::save_safetensors(
      pattern_tensors(),
      (out / "pattern.safetensors").string(),
      {{"producer", "resnet"}, {"note", "r\xc3\xa9seau"}});
  const auto model =
      resnet::read_safetensors(fixture("model.safetensors").string());
  resnet::save_safetensors(
      model.tensors, (out / "model.safetensors").string(), model.metadata);
  EXPECT_TRUE(fs::exists(out / "pattern.safetensors"));
}

} // namespace

} // namespace test_safetensors
