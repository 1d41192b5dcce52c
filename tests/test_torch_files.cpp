// The torch.save reader and writer (resnet/io/detail/torch_save.h): every
// layout torch.save produces, compared bit for bit with what Python wrote
// (tests/python/make_torch_files.py, run before the tests), bad and hostile
// input, and the writer's files read back.

#include "test_support.h"

#include <resnet/io/detail/pickler.h>
#include <resnet/io/detail/torch_save.h>
#include <resnet/io/detail/unpickler.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_torch_files {

namespace {

namespace fs = std::filesystem;
using resnet::detail::PyKind;
using resnet::detail::PyValue;
using resnet_test::contains;
using resnet_test::error_of;

const fs::path kFixtures = fs::path(RESNET_FIXTURE_DIR) / "torch_files";

std::vector<char> file_bytes(const fs::path& path) {
  return resnet::read_file(path.string());
}

PyValue read_bytes(const std::vector<char>& b) {
  return resnet::detail::read_torch_save_bytes(b.data(), b.size());
}

PyValue read_bytes(const std::string& b) {
  return resnet::detail::read_torch_save_bytes(b.data(), b.size());
}

const nlohmann::json& manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(kFixtures / "manifest.json");
    return in ? nlohmann::json::parse(in) : nlohmann::json::object();
  }();
  return m;
}

// One step of a manifest path: "s:key", "i:3", "n:0" or "a:attribute".
PyValue step(const PyValue& v, const std::string& s) {
  const std::string arg = s.substr(2);
  switch (s[0]) {
    case 's':
      TORCH_CHECK(v.contains(arg), "no key '", arg, "' in ", v.repr(80));
      return v.get(arg);
    case 'i':
      for (const auto& item : v.as_dict()) {
        if (item.first.is(PyKind::Int) &&
            item.first.as_int() == std::stoll(arg)) {
          return item.second;
        }
      }
      throw std::runtime_error("no key " + arg + " in " + v.repr(80));
    case 'n':
      return v[std::stoul(arg)];
    case 'a':
      return v.state().get(arg);
    default:
      throw std::runtime_error("bad path step " + s);
  }
}

at::ScalarType dtype_named(const std::string& name) {
  static const std::map<std::string, at::ScalarType> table = {
      {"float32", at::kFloat},
      {"float64", at::kDouble},
      {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16},
      {"bool", at::kBool},
      {"int8", at::kChar},
      {"int16", at::kShort},
      {"int32", at::kInt},
      {"int64", at::kLong},
      {"uint8", at::kByte},
      {"complex64", at::kComplexFloat},
      {"complex128", at::kComplexDouble},
  };
  const auto it = table.find(name);
  TORCH_CHECK(it != table.end(), "dtype ", name);
  return it->second;
}

std::string python_dtype(at::ScalarType dtype) {
  for (const char* name :
       {"float32",
        "float64",
        "float16",
        "bfloat16",
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "complex64",
        "complex128"}) {
    if (dtype_named(name) == dtype) {
      return name;
    }
  }
  return "?";
}

std::string raw_bytes(const torch::Tensor& t) {
  const auto c = t.detach().contiguous();
  return std::string(
      static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// Applies every check the manifest lists for one file to its root value.
void check_file(const nlohmann::json& file, const PyValue& root) {
  std::map<int, const c10::StorageImpl*> groups;
  for (const auto& check : file["checks"]) {
    std::string where = file["file"].get<std::string>() + ":";
    PyValue v = root;
    for (const auto& s : check["path"]) {
      where += '/';
      where += s.get<std::string>();
      v = step(v, s.get<std::string>());
    }
    SCOPED_TRACE(where);
    const std::string type = check["type"];
    if (type == "tensor") {
      ASSERT_TRUE(v.is_tensor()) << v.kind_name();
      const auto& t = v.as_tensor();
      EXPECT_EQ(t.scalar_type(), dtype_named(check["dtype"]));
      EXPECT_EQ(t.sizes().vec(), check["shape"].get<std::vector<int64_t>>());
      EXPECT_EQ(t.strides().vec(), check["stride"].get<std::vector<int64_t>>());
      EXPECT_EQ(t.storage_offset(), check["offset"].get<int64_t>());
      EXPECT_EQ(t.requires_grad(), check["requires_grad"].get<bool>());
      EXPECT_TRUE(t.is_cpu());
      const auto expected =
          file_bytes(kFixtures / check["bin"].get<std::string>());
      EXPECT_TRUE(raw_bytes(t) == std::string(expected.begin(), expected.end()))
          << "values differ";
      if (!check["group"].is_null()) {
        const auto* impl = t.storage().unsafeGetStorageImpl();
        const int g = check["group"];
        const auto it = groups.find(g);
        if (it == groups.end()) {
          for (const auto& other : groups) {
            EXPECT_NE(other.second, impl)
                << "shares storage with group " << other.first;
          }
          groups.emplace(g, impl);
        } else {
          EXPECT_EQ(it->second, impl) << "does not share its storage";
        }
      }
    } else if (type == "bool") {
      EXPECT_EQ(v.as_bool(), check["value"].get<bool>());
    } else if (type == "int") {
      ASSERT_TRUE(v.is(PyKind::Int)) << v.kind_name();
      EXPECT_EQ(v.as_int(), check["value"].get<int64_t>());
    } else if (type == "bigint") {
      EXPECT_TRUE(v.is(PyKind::BigInt)) << v.kind_name();
    } else if (type == "float") {
      ASSERT_TRUE(v.is(PyKind::Float)) << v.kind_name();
      EXPECT_EQ(v.as_float(), check["value"].get<double>());
    } else if (type == "str") {
      EXPECT_EQ(v.as_string(), check["value"].get<std::string>());
    } else if (type == "bytes") {
      EXPECT_EQ(hex(v.as_bytes()), check["hex"].get<std::string>());
    } else if (type == "none") {
      EXPECT_TRUE(v.is_none()) << v.kind_name();
    } else if (type == "dict") {
      ASSERT_TRUE(v.is_dict()) << v.kind_name();
      EXPECT_EQ(v.is_ordered_dict(), check["ordered"].get<bool>());
      EXPECT_EQ(v.size(), check["len"].get<size_t>());
      if (check["metadata"].get<bool>()) {
        EXPECT_TRUE(v.state().is_dict() && v.state().contains("_metadata"))
            << v.state().repr(80);
      }
      if (check.contains("keys")) {
        std::vector<std::string> keys;
        for (const auto& item : v.as_dict()) {
          keys.push_back(item.first.as_string());
        }
        EXPECT_EQ(keys, check["keys"].get<std::vector<std::string>>());
      }
    } else if (type == "list" || type == "tuple" || type == "set") {
      const auto kind = type == "list" ? PyKind::List
          : type == "tuple"            ? PyKind::Tuple
                                       : PyKind::Set;
      ASSERT_TRUE(v.is(kind)) << v.kind_name();
      EXPECT_EQ(v.size(), check["len"].get<size_t>());
    } else if (type == "object") {
      ASSERT_TRUE(v.is(PyKind::Object) || v.is(PyKind::Global))
          << v.kind_name() << " " << v.repr(80);
      if (check.contains("name")) {
        EXPECT_EQ(v.qualified_name(), check["name"].get<std::string>());
      }
    } else {
      ADD_FAILURE() << "unknown check " << type;
    }
  }
}

TEST(TorchFileFixture, EveryFileMatchesWhatPythonSaved) {
  ASSERT_TRUE(manifest().contains("files"))
      << "no manifest in " << kFixtures << " (make_torch_files.py)";
  ASSERT_GE(manifest()["files"].size(), 17u);
  for (const auto& file : manifest()["files"]) {
    const std::string name = file["file"];
    SCOPED_TRACE(name);
    const auto path = kFixtures / name;
    const auto bytes = file_bytes(path);
    const bool zip = file["format"] == "zip";
    EXPECT_EQ(
        resnet::detail::looks_like_torch_zip(bytes.data(), bytes.size()), zip);
    EXPECT_EQ(
        resnet::detail::looks_like_torch_legacy(bytes.data(), bytes.size()),
        !zip);
    check_file(file, resnet::detail::read_torch_save(path.string()));
    check_file(file, read_bytes(bytes));
  }
}

PyValue fixture(const std::string& name) {
  return resnet::detail::read_torch_save((kFixtures / name).string());
}

TEST(TorchFileFixture, StateDictKeepsOrderAndMetadata) {
  const auto root = fixture("resnet18_state_dict.pt");
  ASSERT_TRUE(root.is_ordered_dict());
  const auto items = root.as_dict();
  ASSERT_EQ(items.size(), 122u);
  EXPECT_EQ(items.front().first.as_string(), "conv1.weight");
  EXPECT_EQ(items.back().first.as_string(), "fc.bias");
  const auto metadata = root.state().get("_metadata");
  ASSERT_TRUE(metadata.is_ordered_dict());
  EXPECT_TRUE(metadata.contains("layer1.0.bn1"));
  EXPECT_EQ(metadata.get("").get("version").as_int(), 1);
  EXPECT_EQ(
      root.get("bn1.num_batches_tracked").as_tensor().scalar_type(), at::kLong);
}

TEST(TorchFileFixture, ViewsShareMemoryAsInPython) {
  for (const char* name : {"tensors_protocol2.pt", "tensors_legacy.pt"}) {
    SCOPED_TRACE(name);
    const auto root = fixture(name);
    auto base = root.get("base").as_tensor();
    const auto transposed = root.get("transposed").as_tensor();
    const auto stepped = root.get("stepped").as_tensor();
    EXPECT_FALSE(transposed.is_contiguous());
    EXPECT_EQ(stepped.strides().vec(), (std::vector<int64_t>{6, 2}));
    EXPECT_EQ(stepped.storage_offset(), 6);
    base.zero_();
    EXPECT_EQ(transposed.abs().sum().item<float>(), 0.0f);
    EXPECT_EQ(stepped.abs().sum().item<float>(), 0.0f);
    EXPECT_NE(root.get("float32").as_tensor().abs().sum().item<float>(), 0.0f);
  }
}

TEST(TorchFileFixture, TrainingCheckpointsKeepEverything) {
  for (const char* name :
       {"reference_checkpoint.pt", "reference_checkpoint_legacy.pt"}) {
    SCOPED_TRACE(name);
    const auto root = fixture(name);
    ASSERT_TRUE(root.is_dict());
    EXPECT_FALSE(root.is_ordered_dict());
    const auto args = root.get("args");
    ASSERT_TRUE(args.is(PyKind::Object));
    EXPECT_EQ(args.qualified_name(), "argparse.Namespace");
    EXPECT_EQ(args.state().get("lr").as_float(), 0.1);
    EXPECT_EQ(args.state().get("model").as_string(), "resnet18");
    EXPECT_EQ(args.state().get("lr_steps").size(), 2u);
    const auto optimizer = root.get("optimizer");
    const auto groups = optimizer.get("param_groups");
    ASSERT_EQ(groups.size(), 1u);
    EXPECT_EQ(groups[0].get("momentum").as_float(), 0.9);
    const auto state = optimizer.get("state").as_dict();
    ASSERT_EQ(state.size(), 5u);
    for (const auto& entry : state) {
      EXPECT_TRUE(entry.first.is(PyKind::Int));
      EXPECT_TRUE(entry.second.get("momentum_buffer").is_tensor());
    }
    EXPECT_EQ(root.get("lr_scheduler").get("step_size").as_int(), 30);
    EXPECT_EQ(root.get("epoch").as_int(), 2);
    EXPECT_TRUE(root.get("model").get("0.weight").is_tensor());
  }
}

TEST(TorchFileFixture, ForeignObjectsStayOpaque) {
  const auto root = fixture("values_protocol2.pt");
  EXPECT_EQ(root.get("device").qualified_name(), "torch.device");
  EXPECT_EQ(root.get("device").args()[0].as_string(), "cpu");
  EXPECT_EQ(root.get("dtype").kind(), PyKind::Global);
  EXPECT_EQ(root.get("dtype").qualified_name(), "torch.float16");
  EXPECT_TRUE(root.get("size").is(PyKind::Tuple));
  EXPECT_TRUE(root.get("frozenset").is(PyKind::Set));
  EXPECT_TRUE(contains(root.repr(100000), "argparse.Namespace"));
  EXPECT_LE(root.repr(50).size(), 53u);
  const auto single = fixture("single_tensor.pt");
  ASSERT_TRUE(single.is_tensor());
  EXPECT_EQ(single.as_tensor().storage_offset(), 2);
  EXPECT_TRUE(single.as_tensor().equal(torch::tensor({2.0f, 4.0f, 6.0f})));
}

// ---- hand-made and damaged input -----------------------------------------

// A zip archive like torch.save's holding `pickle` as data.pkl, and `data`
// records named data/0, data/1, ...
std::string archive(
    const std::string& pickle,
    const std::vector<std::string>& data = {}) {
  std::string out;
  caffe2::serialize::PyTorchStreamWriter writer(
      [&out](const void* p, size_t n) {
        out.append(static_cast<const char*>(p), n);
        return n;
      });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  for (size_t k = 0; k < data.size(); ++k) {
    writer.writeRecord(
        "data/" + std::to_string(k), data[k].data(), data[k].size());
  }
  writer.writeEndOfFile();
  return out;
}

// A string literal with its NUL bytes.
template <size_t N>
std::string lit(const char (&s)[N]) {
  return std::string(s, N - 1);
}

std::string le32(uint32_t v) {
  std::string out;
  for (int k = 0; k < 4; ++k) {
    out += static_cast<char>((v >> (8 * k)) & 0xff);
  }
  return out;
}

PyValue unpickle(const std::string& p) {
  return resnet::detail::unpickle(p.data(), p.size());
}

TEST(TorchFilePickle, ReadsEveryKindOfValue) {
  // Protocol 0's text opcodes.
  const auto text = unpickle("(lp0\nI1\naI01\naL12345678901L\naF2.5\na.");
  ASSERT_EQ(text.size(), 4u);
  EXPECT_EQ(text[0].as_int(), 1);
  EXPECT_EQ(text[1].as_bool(), true);
  EXPECT_EQ(text[2].as_int(), 12345678901);
  EXPECT_EQ(text[3].as_float(), 2.5);
  // Protocol 2's bytes: _codecs.encode(str, 'latin1').
  const auto bytes =
      unpickle(lit("\x80\x02"
                   "c_codecs\nencode\n"
                   "X\x04\x00\x00\x00\xc3\xbf\x00"
                   "a"
                   "X\x06\x00\x00\x00latin1"
                   "\x86R."));
  EXPECT_EQ(
      bytes.as_bytes(),
      lit("\xff\x00"
          "a"));
  // LONG1: negative, 64-bit edge, and beyond 64 bits.
  EXPECT_EQ(unpickle(lit("\x80\x02\x8a\x01\xff.")).as_int(), -1);
  EXPECT_EQ(
      unpickle(lit("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\xff."))
          .as_int(),
      INT64_MIN);
  EXPECT_TRUE(
      unpickle(lit("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00."))
          .is(PyKind::BigInt));
  // Frames, protocol 4's STACK_GLOBAL and MEMOIZE, a value used twice.
  const auto memo =
      unpickle(lit("\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00"
                   "\x8c\x0b"
                   "collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94"
                   "\x8c\x01k\x94h\x02s\x8c\x01j\x94h\x02s."));
  ASSERT_TRUE(memo.is_ordered_dict());
  EXPECT_EQ(memo.get("k").qualified_name(), "collections.OrderedDict");
  EXPECT_TRUE(memo.get("k").same(memo.get("j")));
  EXPECT_EQ(memo.as_dict()[1].first.as_string(), "j");
}

TEST(TorchFilePickle, NeverExecutesGlobals) {
  const fs::path marker = fs::path(RESNET_TEST_WORK_DIR) / "torch_files_marker";
  fs::remove(marker);
  const std::string command = "touch " + marker.string();
  const std::string len = le32(static_cast<uint32_t>(command.size()));
  const std::string p =
      "\x80\x02"
      "cos\nsystem\nX" +
      len + command + "\x85R" + "cbuiltins\neval\nX" + len + command +
      "\x85R\x86.";
  const auto root = read_bytes(archive(p));
  ASSERT_TRUE(root.is(PyKind::Tuple));
  EXPECT_EQ(root[0].qualified_name(), "os.system");
  EXPECT_EQ(root[0].args()[0].as_string(), command);
  EXPECT_EQ(root[1].qualified_name(), "builtins.eval");
  EXPECT_FALSE(fs::exists(marker));
}

TEST(TorchFilePickle, RefusesDeepNestingAndCycles) {
  std::string deep = "\x80\x02";
  deep += std::string(100000, ']') + std::string(99999, 'a') + ".";
  EXPECT_TRUE(
      contains(error_of([&] { unpickle(deep); }), "nested deeper than 1000"));
  // The same nesting built top-down: each list is put into its parent
  // while still empty, then filled through the memo.
  std::string top_down = "\x80\x02]]r" + le32(1) + "a";
  for (uint32_t k = 2; k <= 5000; ++k) {
    top_down += 'j';
    top_down += le32(k - 1);
    top_down += "]r";
    top_down += le32(k);
    top_down += "a0";
  }
  EXPECT_TRUE(contains(
      error_of([&] { unpickle(top_down + "."); }), "nested deeper than 1000"));
  EXPECT_TRUE(contains(
      error_of([&] {
        unpickle(
            lit("\x80\x02]q\x00h\x00"
                "a."));
      }),
      "cycle"));
  EXPECT_TRUE(contains(
      error_of([&] {
        read_bytes(
            archive(lit("\x80\x02]q\x00h\x00"
                        "a.")));
      }),
      "cycle"));
}

TEST(TorchFilePickle, RefusesHugeDeclaredLengths) {
  EXPECT_TRUE(contains(
      error_of([&] {
        unpickle(
            lit("\x80\x02X\x00\x00\x00\x80"
                "abc."));
      }),
      "declares 2147483648 bytes"));
  for (const auto& p :
       {lit("\x80\x02\x8e\xff\xff\xff\xff\xff\xff\xff\x3f."),
        lit("\x80\x02\x8b\xff\xff\xff\x7f."),
        lit("\x80\x02j\xff\xff\xff\x7f."),
        lit("\x80\x02\x96\xff\xff\xff\xff\xff\xff\xff\xff.")}) {
    EXPECT_FALSE(error_of([&] { unpickle(p); }).empty());
  }

  // A storage that declares 2^40 floats in a zip and in a legacy file.
  auto tensor_pickle = [](bool legacy) {
    resnet::detail::Pickler p;
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark();
    p.string("storage");
    p.global("torch", "FloatStorage");
    p.string("0");
    p.string("cpu");
    p.integer(int64_t{1} << 40);
    if (legacy) {
      p.none();
    }
    p.tuple();
    p.binpersid();
    p.integer(0);
    p.mark();
    p.integer(int64_t{1} << 40);
    p.tuple();
    p.mark();
    p.integer(1);
    p.tuple();
    p.boolean(false);
    p.global("collections", "OrderedDict");
    p.empty_tuple();
    p.reduce();
    p.tuple();
    p.reduce();
    return p.finish();
  };
  EXPECT_TRUE(contains(
      error_of([&] {
        read_bytes(archive(tensor_pickle(false), {std::string(16, '\0')}));
      }),
      "has 16 bytes, its storage needs 4398046511104"));
  const std::string legacy =
      lit("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.") +
      lit("\x80\x02M\xe9\x03.") + lit("\x80\x02}.") + tensor_pickle(true) +
      lit("\x80\x02]X\x01\x00\x00\x00"
          "0a.") +
      std::string(16, '\0');
  EXPECT_TRUE(
      resnet::detail::looks_like_torch_legacy(legacy.data(), legacy.size()));
  EXPECT_TRUE(contains(
      error_of([&] { read_bytes(legacy); }), "storages declare 4398046511104"));
  // A tensor reaching past its storage.
  EXPECT_TRUE(contains(
      error_of([&] {
        const std::string pk = tensor_pickle(false);
        auto patched = pk;
        // numel 2^40 -> 4 (the LONG1 8-byte operand of the first integer)
        const auto at = patched.find("\x8a\x08");
        patched.replace(at + 2, 8, lit("\x04\0\0\0\0\0\0\0"));
        read_bytes(archive(patched, {std::string(16, '\0')}));
      }),
      "needs 1099511627776 elements of its storage, which has 4"));

  // A legacy file of four floats: whole, then without the storage's data.
  std::string four = tensor_pickle(true);
  for (auto at = four.find("\x8a\x08"); at != std::string::npos;
       at = four.find("\x8a\x08", at + 1)) {
    four.replace(at + 2, 8, lit("\x04\0\0\0\0\0\0\0"));
  }
  const std::string head =
      legacy.substr(0, 15 + 6 + 4) + four; // magic, version, sys_info, main
  const float values[4] = {1.5f, -2.0f, 0.0f, 8.0f};
  const std::string data = lit("\x80\x02]X\x01\x00\x00\x00"
                               "0a.") +
      lit("\x04\0\0\0\0\0\0\0") +
      std::string(reinterpret_cast<const char*>(values), sizeof values);
  const auto whole = read_bytes(head + data);
  ASSERT_TRUE(whole.is_tensor());
  EXPECT_TRUE(
      whole.as_tensor().equal(torch::tensor({1.5f, -2.0f, 0.0f, 8.0f})));
  EXPECT_TRUE(contains(
      error_of([&] { read_bytes(head + lit("\x80\x02].")); }),
      "1 storage(s) used by tensors have no data"));
}

std::vector<std::string> small_files() {
  std::vector<std::string> out;
  for (const char* name :
       {"reference_checkpoint.pt",
        "reference_checkpoint_legacy.pt",
        "values_protocol4.pt",
        "tensors_legacy.pt"}) {
    const auto b = file_bytes(kFixtures / name);
    out.emplace_back(b.begin(), b.end());
  }
  return out;
}

TEST(TorchFileBadInput, TruncatedFilesThrow) {
  for (const auto& file : small_files()) {
    for (size_t cut :
         {size_t{0},
          size_t{1},
          size_t{3},
          size_t{30},
          file.size() / 3,
          file.size() / 2,
          file.size() - 23,
          file.size() - 1}) {
      SCOPED_TRACE(cut);
      const std::string part = file.substr(0, cut);
      EXPECT_THROW(read_bytes(part), c10::Error);
    }
  }
}

TEST(TorchFileBadInput, FlippedBitsLoadOrThrowCleanly) {
  size_t loaded = 0, refused = 0;
  for (const auto& file : small_files()) {
    for (size_t pos = 0; pos < file.size(); ++pos) {
      std::string damaged = file;
      damaged[pos] = static_cast<char>(damaged[pos] ^ (1 << (pos % 8)));
      try {
        const auto root = read_bytes(damaged);
        root.repr(1000);
        ++loaded;
      } catch (const c10::Error&) {
        ++refused;
      }
    }
  }
  EXPECT_GT(loaded, 0u);
  EXPECT_GT(refused, 0u);
}

// ---- the writer -------------------------------------------------------------

TEST(TorchFileWriter, RoundTripsInOrder) {
  torch::manual_seed(0);
  resnet::StateDict state = {
      {"z.weight", torch::randn({3, 4})},
      {"a.bias", torch::randn({5}, torch::kFloat64)},
      {"m.half", torch::randn({2, 2}).to(torch::kHalf)},
      {"m.bf16", torch::randn({3}).to(torch::kBFloat16)},
      {"m.count", torch::tensor(7, torch::kLong)},
      {"m.mask", torch::tensor({true, false})},
      {"m.complex", torch::randn({2}, torch::kComplexFloat)},
      {"m.empty", torch::zeros({0, 4})},
      {"m.transposed", torch::randn({3, 5}).t()},
      {"m.int8", torch::tensor({-3, 4}, torch::kInt8)},
  };
  const auto bytes = resnet::detail::write_torch_save(state);
  EXPECT_TRUE(resnet::detail::looks_like_torch_zip(bytes.data(), bytes.size()));
  const fs::path path =
      fs::path(RESNET_TEST_WORK_DIR) / "torch_files_writer.pt";
  resnet::write_file_atomically(path.string(), bytes);
  // For tests/python/check_torch_writer.py: what torch.load must find.
  nlohmann::json expected;
  for (const auto& item : state) {
    expected["tensors"].push_back(
        {{"name", item.first},
         {"dtype", python_dtype(item.second.scalar_type())},
         {"shape", item.second.sizes().vec()},
         {"hex", hex(raw_bytes(item.second))}});
  }
  std::ofstream(path.parent_path() / "torch_files_writer.json")
      << expected.dump(1);
  for (const auto& root :
       {read_bytes(bytes), resnet::detail::read_torch_save(path.string())}) {
    ASSERT_TRUE(root.is_ordered_dict());
    const auto items = root.as_dict();
    ASSERT_EQ(items.size(), state.size());
    for (size_t k = 0; k < state.size(); ++k) {
      SCOPED_TRACE(state[k].first);
      EXPECT_EQ(items[k].first.as_string(), state[k].first);
      const auto& t = items[k].second.as_tensor();
      EXPECT_EQ(t.scalar_type(), state[k].second.scalar_type());
      EXPECT_EQ(t.sizes(), state[k].second.sizes());
      EXPECT_TRUE(t.is_contiguous());
      EXPECT_EQ(raw_bytes(t), raw_bytes(state[k].second));
    }
  }
  // Written twice, the same bytes.
  EXPECT_TRUE(bytes == resnet::detail::write_torch_save(state));
}

TEST(TorchFileWriter, UsesOnlyGlobalsWeightsOnlyLoadAllows) {
  const auto bytes = resnet::detail::write_torch_save(
      {{"w", torch::ones({2})}, {"n", torch::tensor(1, torch::kLong)}});
  resnet::detail::ReadBudget budget(bytes.size());
  const resnet::detail::TorchArchive archive(
      bytes.data(), bytes.size(), budget);
  const auto* pkl = archive.find("data.pkl");
  ASSERT_NE(pkl, nullptr);
  const auto record = archive.zip().read(*pkl, budget);
  const std::string pickle(record.begin(), record.end());
  // GLOBAL opcodes: 'c' module '\n' name '\n'.
  std::set<std::string> globals;
  const std::regex global("c([A-Za-z_.]+)\n([A-Za-z_0-9]+)\n");
  for (auto it = std::sregex_iterator(pickle.begin(), pickle.end(), global);
       it != std::sregex_iterator();
       ++it) {
    globals.insert((*it)[1].str() + "." + (*it)[2].str());
  }
  EXPECT_EQ(
      globals,
      (std::set<std::string>{
          "collections.OrderedDict",
          "torch._utils._rebuild_tensor_v2",
          "torch.FloatStorage",
          "torch.LongStorage"}));
}

TEST(TorchFileWriter, RefusesWhatItCannotWrite) {
  EXPECT_TRUE(contains(
      error_of([] {
        resnet::detail::write_torch_save({{"x", torch::Tensor()}});
      }),
      "'x' is undefined"));
}

} // namespace

} // namespace test_torch_files
