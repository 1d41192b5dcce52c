// timm's ResNet variants: names, parameter counts and outputs against timm
// (the files written by tests/python/make_timm_models.py), drop path, the new
// options' validation, and the existing features with the new options.

#include "test_support.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <ostream>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_timm {

using namespace resnet_test;
using resnet::Attention;
using resnet::ResNetOptions;
using resnet::StemType;

namespace {

const std::string kFixtures = RESNET_FIXTURE_DIR "/timm_models";

// What make_timm_models.py recorded: timm's version, parameter counts and
// state_dict entries ("name shape") per architecture.
const nlohmann::json& timm_summary() {
  static const nlohmann::json summary = [] {
    std::ifstream in(kFixtures + "/models.json");
    EXPECT_TRUE(in) << "cannot open " << kFixtures
                    << "/models.json: run tests/python/make_timm_models.py "
                       "(the CTest fixture make_timm_models)";
    return in ? nlohmann::json::parse(in) : nlohmann::json::object();
  }();
  return summary;
}

std::vector<std::string> entries_of(const torch::nn::Module& model) {
  std::vector<std::string> out;
  for (const auto& item : resnet::state_dict(model)) {
    std::string shape;
    for (auto s : item.second.sizes()) {
      shape += (shape.empty() ? "" : "x") + std::to_string(s);
    }
    out.push_back(item.first + " " + (shape.empty() ? "scalar" : shape));
  }
  return out;
}

torch::Tensor find_tensor(
    const resnet::StateDict& state,
    const std::string& key) {
  for (const auto& item : state) {
    if (item.first == key) {
      return item.second;
    }
  }
  ADD_FAILURE() << "no '" << key << "' in the reference file";
  return {};
}

// One network the fixture wrote: the variant's file name, how to build it.
struct Variant {
  std::string name;
  std::function<resnet::AnyResNet()> make;
};

void PrintTo(const Variant& v, std::ostream* os) {
  *os << v.name;
}

std::vector<Variant> variants() {
  const auto by_name = [](const char* name) {
    return [name] { return resnet::create(name); };
  };
  return {
      {"resnet18", by_name("resnet18")},
      {"resnet18d", by_name("resnet18d")},
      {"resnet26", by_name("resnet26")},
      {"resnet26d", by_name("resnet26d")},
      {"resnet26t", by_name("resnet26t")},
      {"seresnext26d_32x4d", by_name("seresnext26d_32x4d")},
      {"ecaresnet26t", by_name("ecaresnet26t")},
      // timm's output_stride=16 is a dilated last stage.
      {"resnet26d_os16",
       [] {
         return resnet::create(
             "resnet26d",
             ResNetOptions().replace_stride_with_dilation(
                 {false, false, true}));
       }},
  };
}

// Compares `model` in eval and train mode with timm's outputs.
void expect_outputs_match(
    resnet::AnyResNet& model,
    const std::string& variant,
    const std::string& origin) {
  const auto ref =
      resnet::read_state_dict(kFixtures + "/" + variant + ".ref.pt");
  const auto x = find_tensor(ref, "input");
  torch::NoGradGuard no_grad;
  model->eval();
  const double eval_error =
      relative_error(model->forward(x), find_tensor(ref, "eval"));
  model->train();
  const double train_error =
      relative_error(model->forward(x), find_tensor(ref, "train"));
  EXPECT_LE(eval_error, 1e-5) << variant << " from " << origin;
  EXPECT_LE(train_error, 1e-5) << variant << " from " << origin;
  std::cout << "[ timm     ] " << variant << " (" << origin
            << "): relative error eval " << eval_error << ", train "
            << train_error << "\n";
}

class TimmParity : public ::testing::TestWithParam<Variant> {};

TEST_P(TimmParity, EvalAndTrainOutputsMatchTimm) {
  const auto& v = GetParam();
  auto model = v.make();
  resnet::load_state_dict(model, kFixtures + "/" + v.name + ".dict.pt");
  expect_outputs_match(model, v.name, "dict.pt");
}

TEST_P(TimmParity, NamesInTimmsOrder) {
  const auto& v = GetParam();
  auto model = v.make();
  const auto state =
      resnet::read_state_dict(kFixtures + "/" + v.name + ".dict.pt");
  std::vector<std::string> expected;
  for (const auto& item : state) {
    expected.push_back(item.first);
  }
  std::vector<std::string> ours;
  for (const auto& item : resnet::state_dict(*model)) {
    ours.push_back(item.first);
  }
  EXPECT_EQ(ours, expected);
}

INSTANTIATE_TEST_SUITE_P(
    Variants,
    TimmParity,
    ::testing::ValuesIn(variants()),
    [](const auto& param) { return param.param.name; });

// The same weights through the readers of torch.save's OrderedDict and of
// safetensors files.
class TimmFiles : public ::testing::TestWithParam<Variant> {};

TEST_P(TimmFiles, OrderedDictPth) {
  const auto& v = GetParam();
  auto model = v.make();
  resnet::load_state_dict(model, kFixtures + "/" + v.name + ".pth");
  expect_outputs_match(model, v.name, "pth");
}

TEST_P(TimmFiles, Safetensors) {
  const auto& v = GetParam();
  auto model = v.make();
  resnet::load_state_dict(model, kFixtures + "/" + v.name + ".safetensors");
  expect_outputs_match(model, v.name, "safetensors");
}

INSTANTIATE_TEST_SUITE_P(
    Variants,
    TimmFiles,
    ::testing::ValuesIn(variants()),
    [](const auto& param) { return param.param.name; });

TEST(TimmArchitectures, ParameterCountsAndEntriesEqualTimms) {
  const auto& models = timm_summary().at("models");
  ASSERT_GE(models.size(), 20u);
  for (const auto& [name, recorded] : models.items()) {
    SCOPED_TRACE(name);
    ASSERT_NE(resnet::find_architecture(name), nullptr);
    auto model = resnet::create(name);
    EXPECT_EQ(
        count_parameters(*model), recorded.at("parameters").get<int64_t>());
    EXPECT_EQ(
        entries_of(*model),
        recorded.at("entries").get<std::vector<std::string>>());
  }
}

TEST(TimmArchitectures, EveryTimmRowIsChecked) {
  const auto& models = timm_summary().at("models");
  for (const auto& a : resnet::kArchitectures) {
    if (a.family == resnet::Family::Timm) {
      EXPECT_TRUE(models.contains(std::string(a.name)))
          << a.name << " is not in models.json";
    }
  }
}

TEST(TimmArchitectures, RowsMapOntoOptions) {
  auto d = resnet::resnet50d();
  EXPECT_EQ(d->options().stem_type(), StemType::Deep);
  EXPECT_EQ(d->options().stem_width(), 32);
  EXPECT_TRUE(d->options().avg_down());
  EXPECT_TRUE(d->conv1.is_empty());
  ASSERT_FALSE(d->deep_stem.is_empty());
  EXPECT_EQ(d->deep_stem->size(), 7u);
  auto t = resnet::ecaresnet26t();
  EXPECT_EQ(t->options().stem_type(), StemType::DeepTiered);
  EXPECT_EQ(t->options().attention(), Attention::EfficientChannel);
  EXPECT_FALSE(t->stages[0]->children().empty());
  // The same variant by hand from a plain row.
  auto by_hand = resnet::resnet26(ResNetOptions()
                                      .stem_type(StemType::DeepTiered)
                                      .stem_width(32)
                                      .avg_down(true)
                                      .attention(Attention::EfficientChannel));
  EXPECT_EQ(entries_of(*by_hand), entries_of(*t));
  // Squeeze-and-excitation adds fc1 and fc2 with biases to every block.
  int64_t se_parameters = 0;
  auto plain = resnet::resnet50();
  for (auto& stage : plain->stages) {
    for (auto& block : stage->children()) {
      const int64_t c =
          block->as<resnet::Bottleneck<>::Impl>()->bn3->options.num_features();
      const int64_t r = resnet::se_reduced_channels(c);
      se_parameters += 2 * c * r + r + c;
    }
  }
  EXPECT_EQ(
      count_parameters(*resnet::seresnet50()),
      count_parameters(*plain) + se_parameters);
}

TEST(TimmAttention, ReducedChannelsAndKernelSizesFollowTimm) {
  // timm: make_divisible(C / 16, 8, round_limit=0).
  EXPECT_EQ(resnet::se_reduced_channels(64), 8);
  EXPECT_EQ(resnet::se_reduced_channels(256), 16);
  EXPECT_EQ(resnet::se_reduced_channels(200), 16);
  EXPECT_EQ(resnet::se_reduced_channels(2048), 128);
  EXPECT_EQ(resnet::se_reduced_channels(8), 8);
  // timm: t = int(|log2(C) + 1| / 2), odd, >= 3.
  EXPECT_EQ(resnet::eca_kernel_size(64), 3);
  EXPECT_EQ(resnet::eca_kernel_size(256), 5);
  EXPECT_EQ(resnet::eca_kernel_size(1024), 5);
  EXPECT_EQ(resnet::eca_kernel_size(2048), 7);
  EXPECT_EQ(resnet::eca_kernel_size(1), 3);
}

TEST(TimmAttention, ModulesScaleChannelsByAGate) {
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 64, 5, 5});
  resnet::SqueezeExcite se(64);
  resnet::EfficientChannelAttention eca(64);
  for (const auto& y : {se(x), eca(x)}) {
    ASSERT_EQ(y.sizes(), x.sizes());
    const auto gate = y / x;
    // One gate per sample and channel, in (0, 1).
    EXPECT_TRUE(torch::allclose(
        gate, gate.mean({2, 3}, true).expand_as(gate), 1e-4, 1e-5));
    EXPECT_TRUE((gate > 0).all().item<bool>());
    EXPECT_TRUE((gate < 1).all().item<bool>());
  }
}

// Drop path.

TEST(TimmDropPath, FunctionDropsWholeSamplesAndKeepsTheMean) {
  torch::manual_seed(0);
  const auto x = torch::ones({20000, 3, 2, 2});
  const auto y = resnet::drop_path(x, 0.3, /*training=*/true);
  const auto per_sample = y.flatten(1);
  // Every sample is either dropped (0) or kept and scaled by 1 / 0.7.
  const auto dropped = (per_sample == 0).all(1);
  const auto kept = (per_sample - 1.0 / 0.7).abs().lt(1e-5).all(1);
  EXPECT_TRUE((dropped | kept).all().item<bool>());
  EXPECT_NEAR(dropped.to(torch::kFloat).mean().item<double>(), 0.3, 0.015);
  EXPECT_NEAR(y.mean().item<double>(), 1.0, 0.02);
  EXPECT_TRUE(resnet::drop_path(x, 0.3, /*training=*/false).is_same(x));
  EXPECT_TRUE(resnet::drop_path(x, 0.0, /*training=*/true).is_same(x));
  EXPECT_TRUE(torch::equal(
      resnet::drop_path(x, 1.0, /*training=*/true), torch::zeros_like(x)));
}

TEST(TimmDropPath, RatesGrowLinearlyOverTheBlocks) {
  auto model = resnet::resnet26d(ResNetOptions().drop_path_rate(0.35));
  std::vector<double> rates;
  for (auto& stage : model->stages) {
    for (auto& block : stage->children()) {
      rates.push_back(
          block->as<resnet::Bottleneck<>::Impl>()->options().drop_path());
    }
  }
  ASSERT_EQ(rates.size(), 8u);
  for (size_t i = 0; i < rates.size(); ++i) {
    EXPECT_NEAR(rates[i], 0.35 * static_cast<double>(i) / 7.0, 1e-12);
  }
}

TEST(TimmDropPath, IdentityInEvalRandomInTraining) {
  torch::manual_seed(1);
  auto plain = resnet::resnet18d(ResNetOptions().num_classes(10));
  torch::manual_seed(1);
  auto dropping =
      resnet::resnet18d(ResNetOptions().num_classes(10).drop_path_rate(0.5));
  const auto x = torch::randn({8, 3, 64, 64});
  torch::NoGradGuard no_grad;
  plain->eval();
  dropping->eval();
  EXPECT_TRUE(torch::equal(plain(x), dropping(x)));

  plain->train();
  dropping->train();
  // Without drop path, training mode is deterministic (batch statistics).
  EXPECT_TRUE(torch::equal(plain(x), plain(x)));
  torch::manual_seed(2);
  const auto a = dropping(x);
  const auto b = dropping(x);
  EXPECT_FALSE(torch::equal(a, b));
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
}

TEST(TimmDropPath, BlockKeepsTheExpectedOutput) {
  // One block's residual branch, averaged over many draws, equals the
  // branch without drop path.
  torch::manual_seed(3);
  resnet::Bottleneck<> with(
      resnet::BlockOptions(64, 16).drop_path(0.4).attention(
          Attention::SqueezeExcite));
  resnet::Bottleneck<> without(
      resnet::BlockOptions(64, 16).attention(Attention::SqueezeExcite));
  {
    torch::NoGradGuard no_grad;
    auto src = without->named_parameters();
    for (auto& p : with->named_parameters()) {
      p.value().copy_(src[p.key()]);
    }
  }
  // Eval-mode norms, training-mode drop path: only the drop path differs.
  with->train();
  for (auto& m : with->modules(false)) {
    if (m->as<torch::nn::BatchNorm2d>()) {
      m->eval();
    }
  }
  without->eval();
  torch::NoGradGuard no_grad;
  // With a large positive input the final ReLU is the identity, so the
  // output minus the input is the residual branch.
  const auto x =
      torch::randn({1, 64, 4, 4}).abs().add(10).expand({4000, 64, 4, 4});
  const auto branch_with = (with(x) - x).mean(0);
  const auto branch_without = (without(x) - x).mean(0);
  EXPECT_LT(relative_error(branch_with, branch_without), 0.05);
  // Each sample's branch is either dropped or scaled by 1 / 0.6.
  const auto one = (with(x) - x).flatten(1);
  const auto reference =
      (without(x.narrow(0, 0, 1)) - x.narrow(0, 0, 1)).flatten(1);
  const auto dropped = one.abs().amax(1).lt(1e-4);
  const auto kept = (one - reference / 0.6)
                        .abs()
                        .amax(1)
                        .lt(1e-3 * reference.abs().max().item<double>() + 1e-4);
  EXPECT_TRUE((dropped | kept).all().item<bool>());
}

// Validation.

TEST(TimmOptions, BadValuesAreRefusedClearly) {
  auto msg = error_of([] {
    resnet::resnet50(ResNetOptions().stem_type(StemType::Deep).stem_width(0));
  });
  EXPECT_TRUE(contains(msg, "stem_width must be >= 1")) << msg;
  msg = error_of([] {
    resnet::resnet50(
        ResNetOptions().stem_type(StemType::DeepTiered).stem_width(3));
  });
  EXPECT_TRUE(contains(msg, ">= 4 for StemType::DeepTiered")) << msg;
  EXPECT_TRUE(contains(msg, "got 3")) << msg;
  for (double rate : {-0.1, 1.5}) {
    msg = error_of(
        [rate] { resnet::resnet18(ResNetOptions().drop_path_rate(rate)); });
    EXPECT_TRUE(contains(msg, "drop_path_rate must be in [0, 1]")) << msg;
  }
  msg = error_of(
      [] { resnet::resnet20(ResNetOptions().num_classes(10).avg_down(true)); });
  EXPECT_TRUE(contains(msg, "avg_down applies to projection shortcuts")) << msg;
  msg = error_of([] {
    resnet::Bottleneck<>(resnet::BlockOptions(64, 16).drop_path(2.0));
  });
  EXPECT_TRUE(contains(msg, "drop_path must be in [0, 1], got 2")) << msg;
}

TEST(TimmOptions, RowFieldsConflictingWithOptionsAreRefused) {
  auto msg = error_of([] {
    resnet::create(
        "resnet50d", ResNetOptions().stem_type(StemType::DeepTiered));
  });
  EXPECT_TRUE(contains(
      msg,
      "resnet50d has stem_type=StemType::Deep, got "
      "stem_type=StemType::DeepTiered"))
      << msg;
  msg = error_of([] {
    resnet::create(
        "ecaresnet50d", ResNetOptions().attention(Attention::SqueezeExcite));
  });
  EXPECT_TRUE(contains(msg, "has attention=Attention::EfficientChannel"))
      << msg;
  msg = error_of(
      [] { resnet::create("resnet50d", ResNetOptions().stem_width(48)); });
  EXPECT_TRUE(contains(msg, "has stem_width=32, got stem_width=48")) << msg;
  // Options equal to the row's, or to the defaults, are accepted.
  EXPECT_EQ(
      resnet::create("resnet50d", ResNetOptions().stem_width(32).avg_down(true))
          ->options()
          .stem_width(),
      32);
  // A row without the feature accepts it as an option.
  EXPECT_TRUE(resnet::create("resnet50", ResNetOptions().avg_down(true))
                  ->options()
                  .avg_down());
}

// Existing features with the new options.

TEST(TimmFeatures, StagesFeaturesAndClassifier) {
  torch::NoGradGuard no_grad;
  auto model = resnet::seresnext26d_32x4d(ResNetOptions().num_classes(5));
  model->eval();
  const auto x = torch::randn({2, 3, 64, 64});
  const auto stages = model->forward_stages(x);
  ASSERT_EQ(stages.size(), 4u);
  EXPECT_EQ(stages[0].sizes(), (std::vector<int64_t>{2, 256, 16, 16}));
  EXPECT_EQ(stages[3].sizes(), (std::vector<int64_t>{2, 2048, 2, 2}));
  EXPECT_TRUE(torch::equal(model->forward_features(x), stages[3]));
  model->reset_classifier(3);
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{2, 3}));
  model->reset_classifier(0);
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{2, 2048}));
}

TEST(TimmFeatures, CloneCopiesEverything) {
  torch::NoGradGuard no_grad;
  auto model = resnet::ecaresnet26t(ResNetOptions().num_classes(4));
  model->eval();
  auto copy =
      std::dynamic_pointer_cast<resnet::ResNetImpl<resnet::Bottleneck<>>>(
          model->clone());
  ASSERT_TRUE(copy);
  EXPECT_FALSE(copy->is_training());
  EXPECT_EQ(entries_of(*copy), entries_of(*model));
  const auto x = torch::randn({2, 3, 64, 64});
  EXPECT_TRUE(torch::equal(copy->forward(x), model->forward(x)));
  // Deep copies: changing the copy leaves the original alone.
  copy->named_parameters()["layer1.0.se.conv.weight"].fill_(0.5);
  EXPECT_FALSE(torch::equal(copy->forward(x), model->forward(x)));
}

TEST(TimmFeatures, ZeroInitResidualZeroesTheLastNorm) {
  auto model = resnet::seresnet50(ResNetOptions().zero_init_residual(true));
  const auto params = model->named_parameters();
  EXPECT_EQ(params["layer1.0.bn3.weight"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(params["layer4.2.bn3.weight"].abs().sum().item<double>(), 0.0);
  EXPECT_GT(params["layer1.0.se.fc2.weight"].abs().sum().item<double>(), 0.0);
  // The branch starts at zero, so the output of a block is relu(shortcut).
  torch::NoGradGuard no_grad;
  model->eval();
  auto& block = *model->stages[1]->children()[1];
  const auto x = torch::randn({1, 512, 4, 4});
  EXPECT_TRUE(torch::allclose(
      block.as<resnet::Bottleneck<>::Impl>()->forward(x), x.relu()));
}

TEST(TimmFeatures, OtherNormsAndTheCifarStem) {
  torch::NoGradGuard no_grad;
  auto gn =
      resnet::resnet26t<torch::nn::GroupNorm>(ResNetOptions().num_classes(3));
  auto frozen = resnet::seresnext26d_32x4d<resnet::FrozenBatchNorm2d>(
      ResNetOptions().num_classes(3));
  const auto x = torch::randn({2, 3, 64, 64});
  EXPECT_EQ(gn(x).sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(frozen(x).sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_NE(
      gn->named_modules()["conv1.1"]->as<torch::nn::GroupNorm>(), nullptr);

  // Stem::Cifar: the deep stem's first convolution without stride, no pool.
  auto cifar = resnet::resnet26d(
      ResNetOptions().num_classes(10).stem(resnet::Stem::Cifar));
  cifar->eval();
  EXPECT_EQ(cifar->total_stride(), 8);
  EXPECT_EQ(cifar->maxpool.is_empty(), true);
  const auto stages = cifar->forward_stages(torch::randn({2, 3, 32, 32}));
  EXPECT_EQ(stages[0].sizes(), (std::vector<int64_t>{2, 256, 32, 32}));
  EXPECT_EQ(stages[3].sizes(), (std::vector<int64_t>{2, 2048, 4, 4}));
  // The 'same' pooling shortcut keeps the size in a dilated stage.
  auto dilated = resnet::resnet50d(
      ResNetOptions().replace_stride_with_dilation({false, true, true}));
  dilated->eval();
  EXPECT_EQ(
      dilated->forward_features(torch::randn({1, 3, 64, 64})).sizes(),
      (std::vector<int64_t>{1, 2048, 8, 8}));
}

TEST(TimmFeatures, FuseForInferenceRefusesWhatItCannotFold) {
  for (const char* name :
       {"resnet50c", "resnet26d", "seresnet50", "ecaresnet26t"}) {
    auto model = resnet::create(name);
    model->eval();
    const auto msg = error_of([&] { resnet::fuse_for_inference(model); });
    EXPECT_TRUE(contains(msg, "cannot fuse")) << name << ": " << msg;
  }
  const auto msg = error_of(
      [] { resnet::fuse_for_inference(resnet::create("ecaresnet26t")); });
  EXPECT_TRUE(contains(
      msg,
      "the deep stem (StemType::DeepTiered), averaging shortcuts (avg_down), "
      "attention modules (Attention::EfficientChannel)"))
      << msg;
  auto avg = resnet::resnet50(ResNetOptions().avg_down(true));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::fuse_for_inference(avg); }),
      "averaging shortcuts (avg_down)"));
}

} // namespace

} // namespace test_timm
