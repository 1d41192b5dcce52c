// Weight files as users have them (tests/python/make_checkpoint_layouts.py
// writes them before the tests): one torchvision resnet50 in five files that
// must all load with the plain call, and the layouts of training checkpoints
// that the navigation must find, choose between, or refuse.

#include "test_support.h"

#include <filesystem>
#include <fstream>
#include <map>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_checkpoints {

namespace {

namespace fs = std::filesystem;
using resnet::LoadOptions;
using resnet::ResNetOptions;
using resnet_test::contains;
using resnet_test::error_of;
using resnet_test::relative_error;

fs::path fixture(const std::string& part) {
  const fs::path dir = fs::path(RESNET_FIXTURE_DIR) / "checkpoint_layouts";
  EXPECT_TRUE(fs::exists(dir))
      << dir << " is missing: run the tests through ctest, whose fixture "
      << "make_checkpoint_layouts writes it";
  return dir / part;
}

std::map<std::string, torch::Tensor> as_map(const resnet::StateDict& state) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : state) {
    out.emplace(item.first, item.second);
  }
  return out;
}

bool same_state(const resnet::StateDict& a, const resnet::StateDict& b) {
  const auto ma = as_map(a);
  const auto mb = as_map(b);
  if (ma.size() != mb.size()) {
    return false;
  }
  for (const auto& item : ma) {
    const auto it = mb.find(item.first);
    if (it == mb.end() || !torch::equal(item.second, it->second)) {
      return false;
    }
  }
  return true;
}

TEST(Checkpoints, FiveFilesOfOneResnet50LoadWithThePlainCall) {
  const auto io =
      as_map(resnet::read_state_dict(fixture("resnet50/io.pt").string()));
  const auto reference =
      resnet::read_state_dict(fixture("resnet50/official.pth").string());
  for (const char* name :
       {"official.pth",
        "legacy.pth",
        "protocol4.pth",
        "model.safetensors",
        "checkpoint.pth"}) {
    SCOPED_TRACE(name);
    const auto path = fixture(std::string("resnet50/") + name).string();
    auto model = resnet::resnet50();
    const auto report = resnet::load_state_dict(model, path);
    EXPECT_EQ(report.loaded.size(), resnet::state_dict(*model).size());
    if (std::string(name) == "checkpoint.pth") {
      // Trained one step after the others were written: other weights.
      EXPECT_FALSE(same_state(resnet::state_dict(*model), reference));
      continue;
    }
    EXPECT_TRUE(same_state(resnet::read_state_dict(path), reference));
    model->eval();
    torch::NoGradGuard no_grad;
    const double err =
        relative_error(model->forward(io.at("input")), io.at("eval_output"));
    EXPECT_LE(err, 1e-5);
  }
}

TEST(Checkpoints, TheFormatIsToldByContentNotName) {
  const auto dir = resnet_test::work_dir("renamed");
  const auto reference =
      resnet::read_state_dict(fixture("resnet50/official.pth").string());
  for (const char* name : {"legacy.pth", "model.safetensors"}) {
    const auto copy = dir / (std::string(name) + ".bin");
    fs::copy_file(fixture(std::string("resnet50/") + name), copy);
    EXPECT_TRUE(same_state(resnet::read_state_dict(copy.string()), reference))
        << name;
  }
  resnet_test::remove_tree(dir);
}

TEST(Checkpoints, TrainingCheckpointLayoutsAreFound) {
  const auto weights =
      resnet::read_state_dict(fixture("layouts/weights.pth").string());
  const auto ema =
      resnet::read_state_dict(fixture("layouts/ema_weights.pth").string());
  const std::vector<std::pair<std::string, std::string>> found = {
      {"state_dict", "state_dict"},
      {"model_state_dict", "model_state_dict"},
      {"net_dataparallel", "net"},
      {"model_and_ema", "model"},
      {"unknown_name", "backbone_weights"},
      {"whole_model", ""},
  };
  for (const auto& f : found) {
    SCOPED_TRACE(f.first);
    const auto path = fixture("layouts/" + f.first + ".pth").string();
    const auto info = resnet::inspect_checkpoint(path);
    EXPECT_TRUE(info.state_error.empty()) << info.state_error;
    EXPECT_EQ(info.state_entry, f.second);
    auto model = resnet::resnet18(ResNetOptions().num_classes(10));
    resnet::load_state_dict(model, path);
    EXPECT_TRUE(same_state(resnet::state_dict(*model), weights));
  }
  // The EMA copy on request, and a nested entry by its path.
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  resnet::load_state_dict(
      model,
      fixture("layouts/model_and_ema.pth").string(),
      LoadOptions().entry("model_ema"));
  EXPECT_TRUE(same_state(resnet::state_dict(*model), ema));
  resnet::load_state_dict(
      model,
      fixture("layouts/nested.pth").string(),
      LoadOptions().entry("checkpoint/weights_of_run"));
  EXPECT_TRUE(same_state(resnet::state_dict(*model), weights));
}

TEST(Checkpoints, AmbiguousOrMissingStateDictsAreRefusedClearly) {
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  const auto before = resnet::state_dict(*model);
  std::vector<torch::Tensor> copies;
  for (const auto& item : before) {
    copies.push_back(item.second.clone());
  }
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"two_unknown", {"several entries", "'first', 'second'", "entry("}},
      {"no_tensors",
       {"found no state dict",
        "'args' (argparse.Namespace object)",
        "'epoch' (int)"}},
      {"nested", {"found no state dict", "'checkpoint' (dict)"}},
  };
  for (const auto& c : cases) {
    const auto path = fixture("layouts/" + c.first + ".pth").string();
    const auto msg = error_of([&] { resnet::load_state_dict(model, path); });
    EXPECT_TRUE(contains(msg, path)) << msg;
    for (const auto& part : c.second) {
      EXPECT_TRUE(contains(msg, part)) << c.first << ": " << msg;
    }
  }
  const auto wrong_entry = error_of([&] {
    resnet::load_state_dict(
        model,
        fixture("layouts/model_and_ema.pth").string(),
        LoadOptions().entry("model/nope"));
  });
  EXPECT_TRUE(contains(wrong_entry, "no entry 'nope' in 'model'"))
      << wrong_entry;
  const auto not_a_dict = error_of([&] {
    resnet::load_state_dict(
        model,
        fixture("layouts/model_and_ema.pth").string(),
        LoadOptions().entry("epoch"));
  });
  EXPECT_TRUE(contains(not_a_dict, "entry 'epoch' is a int")) << not_a_dict;
  const auto now = resnet::state_dict(*model);
  for (size_t i = 0; i < now.size(); ++i) {
    EXPECT_TRUE(torch::equal(now[i].second, copies[i])) << now[i].first;
  }
}

TEST(Checkpoints, InspectListsTensorsAndOtherEntries) {
  const auto info =
      resnet::inspect_checkpoint(fixture("resnet50/checkpoint.pth").string());
  EXPECT_EQ(info.format, resnet::CheckpointFormat::TorchSave);
  EXPECT_EQ(info.state_entry, "model");
  EXPECT_EQ(info.state_tensors, 320u);
  std::map<std::string, resnet::CheckpointEntry> by_path;
  for (const auto& e : info.entries) {
    by_path.emplace(e.path, e);
  }
  ASSERT_TRUE(by_path.count("model/conv1.weight"));
  EXPECT_EQ(by_path.at("model/conv1.weight").kind, "tensor");
  EXPECT_EQ(by_path.at("model/conv1.weight").dtype, "Float");
  EXPECT_EQ(
      by_path.at("model/conv1.weight").shape,
      (std::vector<int64_t>{64, 3, 7, 7}));
  ASSERT_TRUE(by_path.count("epoch"));
  EXPECT_EQ(by_path.at("epoch").kind, "int");
  EXPECT_EQ(by_path.at("epoch").value, "599");
  ASSERT_TRUE(by_path.count("args"));
  EXPECT_EQ(by_path.at("args").kind, "argparse.Namespace object");
  // The optimizer's momentum buffers are tensors too (keys are integers).
  EXPECT_TRUE(by_path.count("optimizer/state/0/momentum_buffer"));
  const auto text = resnet::to_string(info, 5);
  EXPECT_TRUE(contains(text, "format: torch.save (zip)")) << text;
  EXPECT_TRUE(contains(text, "state dict: entry 'model', 320 tensors")) << text;

  const auto st = resnet::inspect_checkpoint(
      fixture("resnet50/model.safetensors").string());
  EXPECT_EQ(st.format, resnet::CheckpointFormat::Safetensors);
  EXPECT_EQ(st.state_tensors, 320u);
  EXPECT_EQ(
      resnet::inspect_checkpoint(fixture("resnet50/legacy.pth").string())
          .format,
      resnet::CheckpointFormat::TorchSaveLegacy);
}

TEST(Checkpoints, ForeignFilesAreNamed) {
  const auto dir = resnet_test::work_dir("foreign");
  const std::vector<std::pair<std::string, std::string>> files = {
      {"weights.h5", std::string("\x89HDF\r\n\x1a\n", 8) + "rest"},
      {"array.npy", std::string("\x93NUMPY\x01\x00", 8) + "{'descr'"},
      {"model.gz", std::string("\x1f\x8b\x08\x00", 4) + "zzzz"},
      {"plain.pkl", std::string("\x80\x04\x95\x05\x00", 5) + "}q."},
      {"notes.txt", "conv1.weight = [1, 2, 3]\n"},
      {"empty.pt", ""},
  };
  const std::map<std::string, std::string> expected = {
      {"weights.h5", "an HDF5 file"},
      {"array.npy", "a NumPy .npy array"},
      {"model.gz", "gzip-compressed"},
      {"plain.pkl",
       "a Python pickle (protocol 4) but not one written by "
       "torch.save"},
      {"notes.txt", "not a PyTorch checkpoint"},
      {"empty.pt", "the file is empty"},
  };
  for (const auto& f : files) {
    const auto path = (dir / f.first).string();
    std::ofstream(path, std::ios::binary) << f.second;
    const auto msg = error_of([&] { resnet::read_state_dict(path); });
    EXPECT_TRUE(contains(msg, expected.at(f.first))) << f.first << ": " << msg;
    EXPECT_TRUE(contains(msg, path)) << msg;
  }
  resnet_test::remove_tree(dir);
}

TEST(Checkpoints, SaveChoosesTheFormatByExtension) {
  const auto dir = resnet_test::work_dir("save_format");
  auto model = resnet::resnet20();
  const auto st = (dir / "m.safetensors").string();
  const auto pt = (dir / "m.pt").string();
  resnet::save_state_dict(model, st);
  resnet::save_state_dict(model, pt);
  EXPECT_EQ(
      resnet::inspect_checkpoint(st).format,
      resnet::CheckpointFormat::Safetensors);
  EXPECT_EQ(
      resnet::inspect_checkpoint(pt).format,
      resnet::CheckpointFormat::TorchSave);
  EXPECT_TRUE(
      same_state(resnet::read_state_dict(st), resnet::state_dict(*model)));
  EXPECT_TRUE(
      same_state(resnet::read_state_dict(pt), resnet::state_dict(*model)));
  resnet_test::remove_tree(dir);
}

} // namespace

} // namespace test_checkpoints
