// Weights I/O: the formats, strict checking and bad files. Parity with
// torchvision is in test_parity.cpp.

#include "test_support.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_weights {

namespace {

namespace fs = std::filesystem;
using resnet::LoadOptions;
using resnet::ResNetOptions;
using resnet_test::contains;
using resnet_test::error_of;
using resnet_test::snapshot;
using resnet_test::unchanged;

resnet::ResNet<resnet::BasicBlock<>> small_model(int64_t classes = 10) {
  return resnet::resnet18(
      ResNetOptions().num_classes(classes).base_channels(8).stem(
          resnet::Stem::Cifar));
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(StateDict, FollowsPyTorchOrder) {
  auto model = resnet::resnet50();
  const auto state = resnet::state_dict(*model);
  ASSERT_EQ(state.size(), 320u); // 161 parameters + 159 buffers
  EXPECT_EQ(state[0].first, "conv1.weight");
  EXPECT_EQ(state[1].first, "bn1.weight");
  EXPECT_EQ(state[3].first, "bn1.running_mean");
  EXPECT_EQ(state[5].first, "bn1.num_batches_tracked");
  EXPECT_EQ(state[6].first, "layer1.0.conv1.weight");
  EXPECT_EQ(state.back().first, "fc.bias");
  // The entries are the model's own tensors.
  EXPECT_TRUE(state[0].second.is_same(model->conv1->weight));
}

TEST(Weights, SaveAndLoadRoundTrip) {
  const auto dir = resnet_test::work_dir("roundtrip");
  auto a = small_model();
  a->eval();
  {
    // Make the batch-norm statistics non-trivial.
    torch::NoGradGuard no_grad;
    a->train();
    a->forward(torch::randn({4, 3, 16, 16}));
    a->eval();
  }
  const auto path = (dir / "a.pt").string();
  resnet::save_state_dict(a, path);
  EXPECT_TRUE(fs::exists(path));
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_FALSE(contains(entry.path().string(), ".tmp")) << entry.path();
  }
  auto b = small_model();
  b->eval();
  const auto report = resnet::load_state_dict(b, path);
  EXPECT_EQ(report.loaded.size(), resnet::state_dict(*a).size());
  EXPECT_TRUE(report.missing.empty());
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 16, 16});
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
  EXPECT_EQ(b->bn1->num_batches_tracked.item<int64_t>(), 1);

  // Saving again replaces the file whole.
  a->fc->bias.add_(1);
  resnet::save_state_dict(a, path);
  resnet::load_state_dict(b, path);
  EXPECT_TRUE(torch::equal(a->fc->bias, b->fc->bias));
}

TEST(Weights, LoadsIntoOtherDtype) {
  const auto dir = resnet_test::work_dir("dtype");
  auto a = small_model();
  resnet::save_state_dict(a, (dir / "a.pt").string());
  auto b = small_model();
  b->to(torch::kDouble);
  resnet::load_state_dict(b, (dir / "a.pt").string());
  EXPECT_EQ(b->conv1->weight.scalar_type(), torch::kDouble);
  EXPECT_TRUE(
      torch::allclose(b->conv1->weight.to(torch::kFloat), a->conv1->weight));
  // LibTorch's Module::to(dtype) also converts the integer batch count; it
  // still receives the checkpoint's value.
  EXPECT_EQ(
      b->bn1->num_batches_tracked.item<int64_t>(),
      a->bn1->num_batches_tracked.item<int64_t>());
}

TEST(Weights, StrictLoadOfWrongArchitectureChangesNothing) {
  const auto dir = resnet_test::work_dir("mismatch");
  const auto path = (dir / "r50.pt").string();
  resnet::save_state_dict(resnet::resnet50(), path);
  auto r18 = resnet::resnet18();
  const auto before = snapshot(*r18);
  const auto msg = error_of([&] { resnet::load_state_dict(r18, path); });
  EXPECT_TRUE(contains(
      msg, "cannot load '" + path + "' into the model (nothing was changed)"))
      << msg;
  EXPECT_TRUE(contains(msg, "not in the model (")) << msg;
  EXPECT_TRUE(contains(msg, "layer1.0.conv3.weight")) << msg;
  EXPECT_TRUE(contains(msg, "mismatched (")) << msg;
  EXPECT_TRUE(contains(
      msg,
      "layer1.0.conv1.weight: checkpoint [64, 64, 1, 1], model [64, 64, 3, 3]"))
      << msg;
  EXPECT_TRUE(contains(msg, "mismatched (24)")) << msg;
  EXPECT_TRUE(contains(msg, "... and 12 more")) << msg;
  EXPECT_TRUE(unchanged(*r18, before));

  // The other way round the checkpoint lacks what the model has.
  const auto r18_path = (dir / "r18.pt").string();
  resnet::save_state_dict(r18, r18_path);
  auto r50 = resnet::resnet50();
  const auto before50 = snapshot(*r50);
  const auto msg50 = error_of([&] { resnet::load_state_dict(r50, r18_path); });
  EXPECT_TRUE(contains(msg50, "missing in the checkpoint (")) << msg50;
  EXPECT_TRUE(contains(msg50, "layer1.0.bn3.weight")) << msg50;
  EXPECT_TRUE(unchanged(*r50, before50));
}

TEST(Weights, FineTuningSkipsPrefixesAndNonStrictReports) {
  const auto dir = resnet_test::work_dir("finetune");
  const auto path = (dir / "a.pt").string();
  auto a = small_model(1000);
  resnet::save_state_dict(a, path);
  auto b = small_model(10);
  const auto fc_before = b->fc->weight.clone();
  // Without skipping, the classifier's shape is refused.
  EXPECT_TRUE(contains(
      error_of([&] { resnet::load_state_dict(b, path); }),
      "fc.weight: checkpoint [1000, 64], model [10, 64]"));
  const auto report =
      resnet::load_state_dict(b, path, LoadOptions().skip_prefixes({"fc."}));
  EXPECT_TRUE(torch::equal(a->conv1->weight, b->conv1->weight));
  EXPECT_TRUE(torch::equal(b->fc->weight, fc_before));
  EXPECT_EQ(report.skipped, (std::vector<std::string>{"fc.weight", "fc.bias"}));

  // Non-strict: entries on one side only are reported, not refused.
  resnet::StateDict partial;
  for (const auto& item : resnet::state_dict(*a)) {
    if (item.first.rfind("layer4.", 0) != 0 &&
        item.first.rfind("fc.", 0) != 0) {
      partial.push_back(item);
    }
  }
  partial.emplace_back("extra.weight", torch::ones({3}));
  auto c = small_model(1000);
  const auto before = snapshot(*c);
  const auto strict_msg =
      error_of([&] { resnet::load_state_dict(*c, partial); });
  EXPECT_TRUE(contains(strict_msg, "not in the model (1): extra.weight"))
      << strict_msg;
  EXPECT_TRUE(unchanged(*c, before));
  const auto loose =
      resnet::load_state_dict(*c, partial, LoadOptions().strict(false));
  EXPECT_EQ(loose.unexpected, (std::vector<std::string>{"extra.weight"}));
  EXPECT_FALSE(loose.missing.empty());
  for (const auto& name : loose.missing) {
    EXPECT_TRUE(name.rfind("layer4.", 0) == 0 || name.rfind("fc.", 0) == 0)
        << name;
  }
  EXPECT_TRUE(torch::equal(a->conv1->weight, c->conv1->weight));
}

TEST(Weights, KindMismatchAndOldCheckpointsWithoutBatchCount) {
  auto a = small_model();
  resnet::StateDict state = resnet::state_dict(*a);
  resnet::StateDict without_count, int_weight;
  for (const auto& item : state) {
    if (!contains(item.first, "num_batches_tracked")) {
      without_count.push_back(item);
    }
    int_weight.emplace_back(
        item.first,
        item.first == "conv1.weight" ? item.second.to(torch::kInt)
                                     : item.second);
  }
  auto b = small_model();
  const auto report = resnet::load_state_dict(*b, without_count);
  EXPECT_FALSE(report.missing.empty());
  EXPECT_TRUE(contains(report.missing.front(), "num_batches_tracked"));
  const auto before = snapshot(*b);
  const auto msg = error_of([&] { resnet::load_state_dict(*b, int_weight); });
  EXPECT_TRUE(contains(msg, "conv1.weight: checkpoint Int, model Float"))
      << msg;
  EXPECT_TRUE(unchanged(*b, before));
}

TEST(Weights, ModulePrefixAndKeyMaps) {
  EXPECT_EQ(
      resnet::kuangliu_cifar_key("layer2.0.shortcut.1.running_var"),
      "layer2.0.downsample.1.running_var");
  EXPECT_EQ(resnet::kuangliu_cifar_key("linear.weight"), "fc.weight");
  EXPECT_EQ(
      resnet::kuangliu_cifar_key("layer1.0.conv1.weight"),
      "layer1.0.conv1.weight");

  auto a = small_model();
  resnet::StateDict prefixed;
  for (const auto& item : resnet::state_dict(*a)) {
    prefixed.emplace_back("module." + item.first, item.second);
  }
  auto b = small_model();
  resnet::load_state_dict(*b, prefixed);
  EXPECT_TRUE(torch::equal(a->fc->weight, b->fc->weight));
  const auto msg = error_of([&] {
    resnet::load_state_dict(
        *b, prefixed, LoadOptions().strip_module_prefix(false));
  });
  EXPECT_TRUE(contains(msg, "module.conv1.weight")) << msg;
}

TEST(Weights, NestedStateDictAndLibTorchArchives) {
  const auto dir = resnet_test::work_dir("nested");
  auto a = small_model();
  c10::Dict<std::string, torch::Tensor> inner;
  for (const auto& item : resnet::state_dict(*a)) {
    inner.insert(item.first, item.second);
  }
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("epoch", c10::IValue(int64_t{3}));
  outer.insert("state_dict", c10::IValue(inner));
  const auto bytes = torch::pickle_save(c10::IValue(outer));
  std::ofstream((dir / "nested.pt").string(), std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto b = small_model();
  resnet::load_state_dict(b, (dir / "nested.pt").string());
  EXPECT_TRUE(torch::equal(a->fc->weight, b->fc->weight));

  // LibTorch's own torch::save(module) archive.
  torch::save(a.ptr(), (dir / "libtorch.pt").string());
  auto c = small_model();
  resnet::load_state_dict(c, (dir / "libtorch.pt").string());
  EXPECT_TRUE(torch::equal(a->fc->weight, c->fc->weight));
  EXPECT_TRUE(torch::equal(a->bn1->running_var, c->bn1->running_var));
}

TEST(Weights, BadFilesGiveClearErrorsAndChangeNothing) {
  const auto dir = resnet_test::work_dir("bad");
  const auto good = (dir / "good.pt").string();
  resnet::save_state_dict(small_model(), good);
  const auto bytes = [&] {
    std::ifstream in(good, std::ios::binary);
    return std::string(
        (std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  write_bytes(dir / "empty.pt", "");
  write_bytes(dir / "text.pt", "conv1.weight = [1, 2, 3]\n");
  write_bytes(dir / "legacy.pt", std::string("\x80\x02\x8a\x0alegacy", 10));
  write_bytes(dir / "half.pt", bytes.substr(0, bytes.size() / 2));
  write_bytes(dir / "tail.pt", bytes.substr(0, bytes.size() - 30));
  std::string flipped = bytes;
  for (size_t i = 200; i < flipped.size(); i += 97) {
    flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
  }
  write_bytes(dir / "flipped.pt", flipped);
  std::string zip_without_data = bytes;
  for (auto pos = zip_without_data.find("data.pkl"); pos != std::string::npos;
       pos = zip_without_data.find("data.pkl", pos)) {
    zip_without_data.replace(pos, 8, "nope.pkl");
  }
  write_bytes(dir / "nodata.pt", zip_without_data);

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"missing.pt", "cannot open"},
      {"empty.pt", "the file is empty"},
      {"text.pt", "not a PyTorch checkpoint"},
      {"legacy.pt", "legacy format by its first bytes"},
      {"half.pt", "cannot read checkpoint"},
      {"tail.pt", "cannot read checkpoint"},
      {"flipped.pt", "cannot read checkpoint"},
      {"nodata.pt", "no data.pkl"},
  };
  auto model = small_model();
  const auto before = snapshot(*model);
  for (const auto& c : cases) {
    const auto path = (dir / c.first).string();
    const auto msg = error_of([&] { resnet::load_state_dict(model, path); });
    EXPECT_TRUE(contains(msg, c.second)) << c.first << ": " << msg;
    EXPECT_TRUE(contains(msg, path)) << c.first << ": " << msg;
  }
  EXPECT_TRUE(unchanged(*model, before));
}

TEST(Weights, SaveToUnwritablePlaceFailsCleanly) {
  const auto msg = error_of([] {
    resnet::save_state_dict(resnet::resnet20(), "/nonexistent-dir/x.pt");
  });
  EXPECT_TRUE(contains(msg, "cannot open '/nonexistent-dir/x.pt.tmp")) << msg;
}

} // namespace

} // namespace test_weights
