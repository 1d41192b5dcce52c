// Every row of the architecture table: parameter counts (torchvision's and
// timm's), torchvision's state_dict names and shapes, output shapes with both
// stems.

#include "test_support.h"

#include <fstream>
#include <map>
#include <ostream>

namespace resnet {
// Names the parameter in test output instead of dumping its bytes.
void PrintTo(const Architecture& a, std::ostream* os) {
  *os << a.name;
}
} // namespace resnet

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_architectures {

namespace {

using resnet_test::count_parameters;
using resnet_test::error_of;
using resnet_test::state_entries;

// torchvision's published parameter counts (num_classes 1000), and the
// paper's CIFAR-10 networks with 10 classes and option A shortcuts.
const std::map<std::string, int64_t> kPublishedParameters = {
    {"resnet18", 11689512},
    {"resnet34", 21797672},
    {"resnet50", 25557032},
    {"resnet101", 44549160},
    {"resnet152", 60192808},
    {"resnext50_32x4d", 25028904},
    {"resnext101_32x8d", 88791336},
    {"resnext101_64x4d", 83455272},
    {"wide_resnet50_2", 68883240},
    {"wide_resnet101_2", 126886696},
    // timm 1.0.31's counts for its variants.
    {"resnet18d", 11708744},
    {"resnet26", 15995176},
    {"resnet26d", 16014408},
    {"resnet26t", 16011872},
    {"resnet34d", 21816904},
    {"resnet50c", 25576264},
    {"resnet50s", 25680808},
    {"resnet50d", 25576264},
    {"resnet50t", 25573728},
    {"resnet101d", 44568392},
    {"resnet152d", 60212040},
    {"seresnet50", 28088024},
    {"seresnext26d_32x4d", 16809512},
    {"seresnext50_32x4d", 27559896},
    {"seresnext101_32x4d", 48955416},
    {"ecaresnet26t", 16011916},
    {"ecaresnet50d", 25576350},
    {"ecaresnet50t", 25573814},
    {"ecaresnet101d", 44568563},
    {"resnet20", 269722},
    {"resnet32", 464154},
    {"resnet44", 658586},
    {"resnet56", 853018},
    {"resnet110", 1727962},
};

// Golden state_dict entries written by tests/data/make_torchvision_keys.py.
std::map<std::string, std::vector<std::string>> load_golden() {
  std::ifstream in(RESNET_TEST_DATA_DIR "/torchvision_keys.txt");
  EXPECT_TRUE(in) << "cannot open torchvision_keys.txt";
  std::map<std::string, std::vector<std::string>> golden;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    const auto space = line.find(' ');
    golden[line.substr(0, space)].push_back(line.substr(space + 1));
  }
  return golden;
}

bool is_cifar_paper(const resnet::Architecture& a) {
  return a.family == resnet::Family::CifarPaper;
}

class ArchitectureTest : public ::testing::TestWithParam<resnet::Architecture> {
};

TEST_P(ArchitectureTest, ParameterCountAndNamesMatchTorchvision) {
  const auto& arch = GetParam();
  const auto classes = is_cifar_paper(arch) ? 10 : 1000;
  auto model =
      resnet::create(arch.name, resnet::ResNetOptions().num_classes(classes));
  EXPECT_EQ(
      count_parameters(*model),
      kPublishedParameters.at(std::string(arch.name)));

  // timm's names are checked against timm itself in test_timm.cpp.
  if (arch.family == resnet::Family::TorchVision) {
    static const auto golden = load_golden();
    const auto it = golden.find(std::string(arch.name));
    ASSERT_NE(it, golden.end()) << "no golden keys for " << arch.name;
    EXPECT_EQ(state_entries(*model), it->second);
  }
}

TEST_P(ArchitectureTest, OutputShapesWithBothStems) {
  const auto& arch = GetParam();
  torch::NoGradGuard no_grad;
  for (auto stem : {resnet::Stem::ImageNet, resnet::Stem::Cifar}) {
    auto model = resnet::create(
        arch.name, resnet::ResNetOptions().num_classes(7).stem(stem));
    model->eval();
    const bool cifar = model->options().stem() == resnet::Stem::Cifar;
    // The smallest inputs whose last stage is still 2x2: the deep and wide
    // networks at full width are slow on a CPU, and shapes are all this asks.
    const int64_t size = cifar ? 16 : 64;
    const auto stages = model->forward_stages(torch::randn({2, 3, size, size}));
    ASSERT_EQ(stages.size(), arch.stages().size());
    const auto channels = model->stage_channels();
    int64_t spatial = cifar ? size : size / 4;
    for (size_t i = 0; i < stages.size(); ++i) {
      spatial = i == 0 ? spatial : spatial / 2;
      EXPECT_EQ(
          stages[i].sizes(),
          (std::vector<int64_t>{2, channels[i], spatial, spatial}))
          << arch.name << " stage " << i + 1;
    }
    const auto logits = model->forward(torch::randn({2, 3, size, size}));
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 7}));
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllArchitectures,
    ArchitectureTest,
    ::testing::ValuesIn(resnet::kArchitectures),
    [](const auto& param) { return std::string(param.param.name); });

TEST(Architectures, ListMatchesTableAndTypedFactories) {
  const auto names = resnet::architectures();
  ASSERT_EQ(names.size(), std::size(resnet::kArchitectures));
  EXPECT_EQ(names.front(), "resnet18");
  EXPECT_EQ(names.back(), "resnet110");
  EXPECT_EQ(count_parameters(*resnet::resnet18()), 11689512);
  EXPECT_EQ(count_parameters(*resnet::resnext50_32x4d()), 25028904);
  EXPECT_EQ(
      count_parameters(
          *resnet::resnet56(resnet::ResNetOptions().num_classes(10))),
      853018);
  EXPECT_EQ(
      resnet::find_architecture("resnet34")->stages(),
      (std::vector<int64_t>{3, 4, 6, 3}));
  EXPECT_EQ(resnet::find_architecture("resnet35"), nullptr);
}

TEST(Architectures, UnknownNameListsKnownOnes) {
  const auto msg = error_of([] { resnet::create("resnet19"); });
  EXPECT_NE(msg.find("unknown architecture 'resnet19'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("resnet18, resnet34"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resnet110"), std::string::npos) << msg;
}

TEST(CifarPaper, DepthIsSixNPlusTwo) {
  for (const auto& arch : resnet::kArchitectures) {
    if (!is_cifar_paper(arch)) {
      continue;
    }
    auto model =
        resnet::create(arch.name, resnet::ResNetOptions().num_classes(10));
    int64_t weighted_layers = 0;
    for (const auto& m : model->modules()) {
      weighted_layers +=
          m->as<torch::nn::Conv2d>() || m->as<torch::nn::Linear>();
    }
    const int64_t n = arch.layers[0];
    EXPECT_EQ(weighted_layers, 6 * n + 2) << arch.name;
    EXPECT_EQ("resnet" + std::to_string(6 * n + 2), arch.name);
    EXPECT_EQ(model->stage_channels(), (std::vector<int64_t>{16, 32, 64}));
    EXPECT_EQ(model->total_stride(), 4);
  }
}

TEST(CifarPaper, ProjectionShortcutsAreOptionB) {
  const auto a = resnet::resnet20(resnet::ResNetOptions().num_classes(10));
  const auto b =
      resnet::resnet20(resnet::ResNetOptions().num_classes(10).shortcut(
          resnet::Shortcut::Projection));
  // Option B adds a 1x1 convolution and a batch norm at stages 2 and 3:
  // (16*32 + 2*32) + (32*64 + 2*64) = 2752 parameters.
  EXPECT_EQ(count_parameters(*b) - count_parameters(*a), 2752);
  EXPECT_EQ(
      a->named_parameters().find("layer2.0.downsample.0.weight"), nullptr);
  ASSERT_NE(
      b->named_parameters().find("layer2.0.downsample.0.weight"), nullptr);
  EXPECT_EQ(
      b->named_parameters()["layer3.0.downsample.0.weight"].sizes(),
      (std::vector<int64_t>{64, 32, 1, 1}));
}

} // namespace

} // namespace test_architectures
