// The input policy, function by function: every bad tensor, path, name or
// option gets a `c10::Error` that names the problem, and leaves models and
// files as they were. Values are not inspected: NaN and Inf flow through a
// network as they do through PyTorch's. Empty batches give empty outputs.

#include "test_support.h"

#include <resnet/data/cifar.h>
#include <resnet/data/idx.h>
#include <resnet/data/image.h>
#include <resnet/data/transforms.h>

#include <filesystem>
#include <fstream>
#include <functional>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_input_audit {

namespace fs = std::filesystem;
using resnet::ResNetOptions;
using resnet_test::contains;
using resnet_test::error_of;
using resnet_test::snapshot;
using resnet_test::unchanged;

namespace {

resnet::ResNet<resnet::BasicBlock<>> tiny() {
  torch::manual_seed(0);
  return resnet::resnet18(ResNetOptions().num_classes(10).base_channels(8).stem(
      resnet::Stem::Cifar));
}

} // namespace

TEST(InputPolicy, EmptyBatchesGiveEmptyOutputsInBothModes) {
  auto model = tiny();
  const auto before = snapshot(*model);
  model->train();
  auto out = model->forward(torch::randn({0, 3, 32, 32}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{0, 10}));
  // Training on nothing leaves the weights and running statistics as they
  // were; as in PyTorch, num_batches_tracked counts the call.
  const auto after = resnet::state_dict(*model);
  for (size_t i = 0; i < after.size(); ++i) {
    const auto& name = after[i].first;
    if (name.find("num_batches_tracked") == std::string::npos) {
      EXPECT_TRUE(torch::equal(after[i].second, before[i])) << name;
    }
  }
  model->eval();
  torch::NoGradGuard no_grad;
  out = model->forward(torch::randn({0, 3, 32, 32}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{0, 10}));
  EXPECT_EQ(model->forward_stages(torch::randn({0, 3, 32, 32})).size(), 4u);
}

TEST(InputPolicy, NanAndInfFlowThroughUninspected) {
  auto model = tiny();
  model->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 3, 32, 32});
  x[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  x[1][1][1][1] = std::numeric_limits<float>::infinity();
  const auto out = model->forward(x);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_TRUE(out[0].isnan().all().item<bool>());
}

TEST(InputPolicy, TensorsOnAnotherDeviceOrOfAnotherDtypeAreRefused) {
  auto model = tiny();
  model->eval();
  const auto before = snapshot(*model);
  torch::NoGradGuard no_grad;
  auto msg = error_of([&] {
    model->forward(torch::empty({1, 3, 32, 32}, torch::Device(torch::kMeta)));
  });
  EXPECT_TRUE(contains(msg, "the input is on meta, the network on cpu")) << msg;
  msg = error_of([&] {
    model->forward(torch::randn({1, 3, 32, 32}, torch::kDouble));
  });
  EXPECT_FALSE(msg.empty());
  msg = error_of([&] {
    model->forward(torch::randn({1, 3, 32, 32}).to(torch::kComplexFloat));
  });
  EXPECT_FALSE(msg.empty());
  EXPECT_TRUE(unchanged(*model, before));
  auto fused = resnet::fuse_for_inference(model);
  msg = error_of([&] {
    fused->forward(torch::empty({1, 3, 32, 32}, torch::Device(torch::kMeta)));
  });
  EXPECT_TRUE(contains(msg, "on meta")) << msg;
}

TEST(InputPolicy, UnknownNamesListWhatExists) {
  auto msg = error_of([] { resnet::create("resnet19"); });
  EXPECT_TRUE(contains(msg, "resnet19") && contains(msg, "resnet18")) << msg;
  msg = error_of([] { resnet::create(""); });
  EXPECT_TRUE(contains(msg, "resnet18")) << msg;
  EXPECT_EQ(resnet::find_architecture("ResNet18"), nullptr);
  for (const char* bad : {"gpu", "", "cuda:-1", "cpu:0:1", "cuda:x"}) {
    msg = error_of([&] { resnet::parse_device(bad); });
    EXPECT_TRUE(contains(msg, "device")) << bad << ": " << msg;
  }
  auto model = tiny();
  msg = error_of([&] {
    resnet::read_state_dict(
        (fs::path(RESNET_FIXTURE_DIR) / "checkpoint_layouts" / "resnet50" /
         "checkpoint.pth")
            .string(),
        "no_such_entry");
  });
  EXPECT_TRUE(contains(msg, "no_such_entry")) << msg;
}

TEST(InputPolicy, OptionsOutOfRange) {
  const std::vector<std::pair<std::function<void()>, std::string>> cases = {
      {[] { resnet::resnet18(ResNetOptions().base_channels(0)); },
       "base_channels must be >= 1"},
      {[] { resnet::resnet18(ResNetOptions().drop_path_rate(1.5)); },
       "drop_path_rate must be in [0, 1]"},
      {[] { resnet::resnet18(ResNetOptions().drop_path_rate(-0.1)); },
       "drop_path_rate must be in [0, 1]"},
      {[] {
         resnet::resnet18(
             ResNetOptions().stem_type(resnet::StemType::Deep).stem_width(0));
       },
       "stem_width must be >= 1"},
      {[] {
         resnet::resnet18(ResNetOptions().replace_stride_with_dilation({true}));
       },
       "needs 3 entries"},
      {[] { resnet::resnet18(ResNetOptions().groups(2)); }, "groups"},
      {[] { tiny()->reset_classifier(-1); }, "num_classes"},
      {[] { resnet::cast_floating(*tiny(), torch::kInt); },
       "floating-point dtype"},
  };
  for (const auto& c : cases) {
    const auto msg = error_of(c.first);
    EXPECT_TRUE(contains(msg, c.second)) << c.second << " | " << msg;
  }
}

TEST(InputPolicy, TransformsCheckShapesAndParameters) {
  const auto image = torch::randint(0, 255, {3, 40, 50}, torch::kByte);
  const std::vector<std::pair<std::function<void()>, std::string>> cases = {
      {[&] { resnet::preprocess(image[0]); }, "expects an image [C, H, W]"},
      {[&] { resnet::resize_shorter_side(image, 0); }, "size > 0"},
      {[&] {
         resnet::resize_shorter_side(torch::zeros({3, 0, 5}), 4);
       },
       "empty image"},
      {[&] { resnet::center_crop(image, 41); }, "crop"},
      {[&] { resnet::center_crop(image, 0); }, "crop"},
      {[&] { resnet::normalize(image.to(torch::kFloat), {0.5}, {0.5}); },
       "one mean and std per channel (3)"},
      {[&] {
         resnet::normalize(
             image.to(torch::kFloat), {0.5, 0.5, 0.5}, {0.2, 0.0, 0.2});
       },
       "every std must be > 0"},
      {[&] { resnet::normalize(torch::ones({5}), {0.5}, {0.5}); }, "[C, H, W]"},
      {[&] {
         resnet::preprocess(torch::randint(0, 255, {4, 40, 50}, torch::kByte));
       },
       "one mean and std per channel (4)"},
  };
  for (const auto& c : cases) {
    const auto msg = error_of(c.first);
    EXPECT_TRUE(contains(msg, c.second)) << c.second << " | " << msg;
  }
}

TEST(InputPolicy, StateDictsWithBadTensorsChangeNothing) {
  auto model = tiny();
  const auto before = snapshot(*model);
  auto state = resnet::state_dict(*model);
  // An undefined tensor.
  auto broken = state;
  broken[0].second = torch::Tensor();
  auto msg = error_of([&] { resnet::load_state_dict(model, broken); });
  EXPECT_TRUE(contains(msg, broken[0].first)) << msg;
  // A tensor with no data (meta).
  broken = state;
  broken[1].second = torch::empty_like(state[1].second, torch::kMeta);
  msg = error_of([&] { resnet::load_state_dict(model, broken); });
  EXPECT_FALSE(msg.empty());
  // A name twice.
  broken = state;
  broken.push_back(state[0]);
  msg = error_of([&] { resnet::load_state_dict(model, broken); });
  EXPECT_TRUE(contains(msg, "twice")) << msg;
  EXPECT_TRUE(unchanged(*model, before));
  // NaN weights load as they are (values are not inspected).
  auto nan_state = state;
  nan_state[0].second = torch::full_like(
      state[0].second, std::numeric_limits<float>::quiet_NaN());
  resnet::load_state_dict(model, nan_state);
  EXPECT_TRUE(resnet::state_dict(*model)[0].second.isnan().all().item<bool>());
}

TEST(InputPolicy, SavingBadStateDictsWritesNothing) {
  const auto dir = resnet_test::work_dir("audit/save");
  auto state = resnet::state_dict(*tiny());
  for (const char* name : {"w.pt", "w.safetensors"}) {
    const auto path = (dir / name).string();
    auto broken = state;
    broken.push_back(state[0]);
    auto msg = error_of([&] { resnet::save_state_dict(broken, path); });
    EXPECT_TRUE(contains(msg, "twice")) << name << ": " << msg;
    broken = state;
    broken[2].second = torch::Tensor();
    msg = error_of([&] { resnet::save_state_dict(broken, path); });
    EXPECT_TRUE(contains(msg, broken[2].first)) << name << ": " << msg;
    broken = state;
    broken[2].first = "";
    msg = error_of([&] { resnet::save_state_dict(broken, path); });
    EXPECT_TRUE(contains(msg, "empty name")) << name << ": " << msg;
    EXPECT_FALSE(fs::exists(path)) << name;
    // Into a folder that does not exist, or onto a folder.
    msg = error_of([&] {
      resnet::save_state_dict(state, (dir / "missing" / name).string());
    });
    EXPECT_TRUE(contains(msg, "missing")) << msg;
    fs::create_directories(dir / "folder" / name);
    msg = error_of([&] {
      resnet::save_state_dict(state, (dir / "folder" / name).string());
    });
    EXPECT_TRUE(contains(msg, "folder")) << msg;
  }
  EXPECT_TRUE(fs::is_empty(dir / "folder" / "w.pt"));
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos)
        << e.path() << " left behind";
  }
}

TEST(InputPolicy, PathsThatAreNotCheckpoints) {
  const auto dir = resnet_test::work_dir("audit/paths");
  auto model = tiny();
  const auto before = snapshot(*model);
  std::ofstream(dir / "empty.pt");
  for (const auto& path :
       {dir / "missing.pt", dir, dir / "empty.pt", fs::path("")}) {
    const auto msg =
        error_of([&] { resnet::load_state_dict(model, path.string()); });
    EXPECT_TRUE(contains(msg, "cannot read checkpoint")) << path << ": " << msg;
    EXPECT_FALSE(
        error_of([&] { resnet::inspect_checkpoint(path.string()); }).empty());
  }
  EXPECT_TRUE(unchanged(*model, before));
}

TEST(ErrorConvention, EveryReaderStartsWithResnetAndNamesTheFile) {
  const auto dir = resnet_test::work_dir("audit/errors");
  const std::vector<std::pair<std::string, std::string>> contents = {
      {"empty.bin", ""},
      {"text.bin", "not a weight file, an image or a dataset"},
      {"zip.bin", std::string("PK\x03\x04", 4) + std::string(60, 'x')},
      {"legacy.bin",
       std::string(
           "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14)},
      {"safetensors.bin",
       std::string("\x0c\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}    ", 20)},
      {"gzip.bin", std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00xx", 10)},
      {"png.bin", std::string("\x89PNG\r\n\x1a\n\x00\x00", 10)},
      {"jpeg.bin", std::string("\xff\xd8\xff\xe0\x00\x10", 6)},
      {"idx.bin", std::string("\x00\x00\x08\x03\x00\x00\x00\x05", 8)},
  };
  std::vector<std::string> paths;
  for (const auto& [name, bytes] : contents) {
    const auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    paths.push_back(path);
  }
  paths.push_back((dir / "missing.bin").string());
  paths.push_back(dir.string()); // a folder
  auto model = tiny();
  const std::vector<
      std::pair<const char*, std::function<void(const std::string&)>>>
      readers = {
          {"read_file", [](const auto& p) { resnet::read_file(p); }},
          {"read_state_dict",
           [](const auto& p) { resnet::read_state_dict(p); }},
          {"inspect_checkpoint",
           [](const auto& p) { resnet::inspect_checkpoint(p); }},
          {"load_state_dict",
           [&](const auto& p) { resnet::load_state_dict(*model, p); }},
          {"read_safetensors",
           [](const auto& p) { resnet::read_safetensors(p); }},
          {"read_image", [](const auto& p) { resnet::read_image(p); }},
          {"read_idx", [](const auto& p) { resnet::data::read_idx(p); }},
          {"read_cifar",
           [](const auto& p) {
             resnet::data::read_cifar({p}, resnet::data::Cifar::Ten);
           }},
      };
  int refused = 0;
  for (const auto& [reader, read] : readers) {
    for (const auto& path : paths) {
      std::string message;
      try {
        read(path);
        continue; // some readers take some of these files
      } catch (const c10::Error& e) {
        message = e.what_without_backtrace();
      }
      ++refused;
      EXPECT_EQ(message.rfind("resnet: ", 0), 0u)
          << reader << "(" << path << "): " << message;
      EXPECT_TRUE(contains(message, path))
          << reader << "(" << path << "): " << message;
    }
  }
  // read_file reads any regular file; every other reader refuses all of
  // these, and nobody reads a missing file or a folder.
  EXPECT_EQ(refused, static_cast<int>((readers.size() - 1) * paths.size() + 2));
  // Bytes in memory have no file to name; the prefix is the same.
  for (const auto& [name, bytes] : contents) {
    const auto message = error_of([&] {
      resnet::decode_image(
          reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    });
    EXPECT_EQ(message.rfind("resnet: ", 0), 0u) << name << ": " << message;
  }
}

} // namespace test_input_audit
