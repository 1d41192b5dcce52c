// Options, modes, feature access, normalization choices, errors on bad input
// and the helpers around the network.

#include "test_support.h"

#include <resnet/data/transforms.h>

#include <cmath>
#include <cstdlib>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_behaviour {

namespace {

using resnet::ResNetOptions;
using resnet_test::contains;
using resnet_test::count_parameters;
using resnet_test::error_of;
using resnet_test::relative_error;

// A resnet18 of width 8 instead of 64: fast enough for many CPU tests.
resnet::ResNet<resnet::BasicBlock<>> tiny_resnet18(int64_t classes = 5) {
  return resnet::resnet18(
      ResNetOptions().num_classes(classes).base_channels(8).stem(
          resnet::Stem::Cifar));
}

TEST(Options, StemByNameOrImageSize) {
  using resnet::Stem;
  EXPECT_EQ(resnet::parse_stem("auto", 28), Stem::Cifar);
  EXPECT_EQ(resnet::parse_stem("auto", 64), Stem::Cifar);
  EXPECT_EQ(resnet::parse_stem("auto", 65), Stem::ImageNet);
  EXPECT_EQ(resnet::parse_stem("cifar", 224), Stem::Cifar);
  EXPECT_EQ(resnet::parse_stem("imagenet", 32), Stem::ImageNet);
  EXPECT_STREQ(resnet::to_string(Stem::Cifar), "cifar");
  EXPECT_STREQ(resnet::to_string(Stem::ImageNet), "imagenet");
  EXPECT_TRUE(resnet_test::contains(
      resnet_test::error_of([] { resnet::parse_stem("Cifar", 32); }),
      "resnet: unknown stem 'Cifar' (auto, cifar or imagenet)"));
}

TEST(Options, InChannels) {
  auto model = resnet::resnet18(ResNetOptions().in_channels(1).num_classes(10));
  EXPECT_EQ(model->conv1->weight.sizes(), (std::vector<int64_t>{64, 1, 7, 7}));
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(
      model->forward(torch::randn({3, 1, 40, 40})).sizes(),
      (std::vector<int64_t>{3, 10}));
  const auto msg = error_of([&] {
    model->forward(torch::randn({3, 3, 40, 40}));
  });
  EXPECT_TRUE(
      contains(msg, "expected input [N, C, H, W] with C=1, got [3, 3, 40, 40]"))
      << msg;
}

TEST(Options, GroupsAndWidthFollowTorchvision) {
  auto resnext = resnet::resnext50_32x4d();
  // width = 64 * 4 / 64 * 32 = 128 channels in 32 groups of 4.
  EXPECT_EQ(
      resnext->named_parameters()["layer1.0.conv2.weight"].sizes(),
      (std::vector<int64_t>{128, 4, 3, 3}));
  auto wide = resnet::wide_resnet50_2();
  EXPECT_EQ(
      wide->named_parameters()["layer1.0.conv2.weight"].sizes(),
      (std::vector<int64_t>{128, 128, 3, 3}));
  // resnet50 with ResNeXt's options is ResNeXt-50, as in torchvision.
  EXPECT_EQ(
      count_parameters(
          *resnet::resnet50(ResNetOptions().groups(32).width_per_group(4))),
      25028904);
  // An explicit value that contradicts the architecture is refused.
  const auto msg =
      error_of([] { resnet::resnext50_32x4d(ResNetOptions().groups(8)); });
  EXPECT_TRUE(contains(msg, "resnext50_32x4d has groups=32, got groups=8"))
      << msg;
  const auto basic =
      error_of([] { resnet::resnet18(ResNetOptions().groups(2)); });
  EXPECT_TRUE(
      contains(basic, "BasicBlock only supports groups=1 and base_width=64"))
      << basic;
}

TEST(Options, DilationKeepsSpatialSize) {
  auto model = resnet::resnet50(
      ResNetOptions().replace_stride_with_dilation({false, true, true}));
  EXPECT_EQ(model->total_stride(), 8);
  // The first block of a dilated stage keeps the previous dilation.
  const auto dilation = [&](const std::string& name) {
    const auto& d = *model->named_modules()[name]
                         ->as<torch::nn::Conv2d>()
                         ->options.dilation();
    return std::vector<int64_t>(d.begin(), d.end());
  };
  EXPECT_EQ(dilation("layer4.0.conv2"), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(dilation("layer4.1.conv2"), (std::vector<int64_t>{4, 4}));
  model->eval();
  torch::NoGradGuard no_grad;
  const auto stages = model->forward_stages(torch::randn({1, 3, 64, 64}));
  EXPECT_EQ(stages[1].sizes(), (std::vector<int64_t>{1, 512, 8, 8}));
  EXPECT_EQ(stages[2].sizes(), (std::vector<int64_t>{1, 1024, 8, 8}));
  EXPECT_EQ(stages[3].sizes(), (std::vector<int64_t>{1, 2048, 8, 8}));
  // Same parameters as the undilated network.
  EXPECT_EQ(count_parameters(*model), 25557032);

  const auto basic = error_of([] {
    resnet::resnet18(
        ResNetOptions().replace_stride_with_dilation({false, false, true}));
  });
  EXPECT_TRUE(contains(basic, "BasicBlock does not support dilation > 1"))
      << basic;
  const auto count = error_of([] {
    resnet::resnet50(ResNetOptions().replace_stride_with_dilation({true}));
  });
  EXPECT_TRUE(contains(count, "needs 3 entries")) << count;
  const auto cifar = error_of([] {
    resnet::resnet20(
        ResNetOptions().replace_stride_with_dilation({false, false, true}));
  });
  EXPECT_TRUE(contains(cifar, "refers to stage 4 but the network has 3 stages"))
      << cifar;
}

TEST(Options, ZeroInitResidualZeroesLastNormOfEachBlock) {
  auto basic = resnet::resnet18(ResNetOptions().zero_init_residual(true));
  auto bottleneck = resnet::resnet50(ResNetOptions().zero_init_residual(true));
  int zeroed = 0;
  for (const auto& item : basic->named_parameters()) {
    const auto& name = item.key();
    const bool last = contains(name, ".bn2.weight");
    if (last) {
      EXPECT_TRUE(item.value().eq(0).all().item<bool>()) << name;
      ++zeroed;
    } else if (contains(name, "bn1.weight")) {
      EXPECT_TRUE(item.value().eq(1).all().item<bool>()) << name;
    }
  }
  EXPECT_EQ(zeroed, 8);
  zeroed = 0;
  for (const auto& item : bottleneck->named_parameters()) {
    const auto& name = item.key();
    if (contains(name, ".bn3.weight")) {
      EXPECT_TRUE(item.value().eq(0).all().item<bool>()) << name;
      ++zeroed;
    } else if (
        contains(name, ".bn2.weight") ||
        contains(name, "downsample.1.weight")) {
      EXPECT_TRUE(item.value().eq(1).all().item<bool>()) << name;
    }
  }
  EXPECT_EQ(zeroed, 16);

  // A block without projection is then relu(x + 0): the identity on x >= 0.
  basic->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::rand({2, 64, 8, 8});
  auto block = basic->stages[0]->ptr<resnet::BasicBlockImpl<>>(0);
  EXPECT_TRUE(torch::equal(block->forward(x), x));
  // Without the option, the same block changes its input.
  auto plain = resnet::resnet18();
  plain->eval();
  EXPECT_FALSE(torch::allclose(
      plain->stages[0]->ptr<resnet::BasicBlockImpl<>>(0)->forward(x), x));
}

TEST(Options, WeightInitIsHeNormalFanOut) {
  auto model = resnet::resnet50();
  const auto w = model->named_parameters()["layer3.0.conv2.weight"];
  // fan_out = 256 * 3 * 3; std = sqrt(2 / fan_out).
  const double expected = std::sqrt(2.0 / (256 * 9));
  EXPECT_NEAR(w.std().item<double>(), expected, 0.03 * expected);
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.03 * expected);
  EXPECT_TRUE(model->bn1->weight.eq(1).all().item<bool>());
  EXPECT_TRUE(model->bn1->bias.eq(0).all().item<bool>());
  // fc keeps Linear's default: uniform in +-1/sqrt(in_features).
  const double bound = 1.0 / std::sqrt(2048.0);
  EXPECT_LE(model->fc->weight.abs().max().item<double>(), bound);
  EXPECT_GT(model->fc->weight.abs().max().item<double>(), 0.9 * bound);
}

TEST(Modes, TrainUsesBatchStatisticsEvalUsesRunningOnes) {
  torch::manual_seed(0);
  auto model = tiny_resnet18();
  const auto x = torch::randn({4, 3, 16, 16}) * 3 + 1;
  ASSERT_TRUE(model->is_training());
  const auto mean_before = model->bn1->running_mean.clone();
  const auto train_out = model->forward(x);
  EXPECT_FALSE(torch::equal(model->bn1->running_mean, mean_before));
  EXPECT_EQ(model->bn1->num_batches_tracked.item<int64_t>(), 1);

  // Gradients reach every parameter.
  train_out.logsumexp(1).sum().backward();
  for (const auto& item : model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0) << item.key();
  }

  model->eval();
  torch::NoGradGuard no_grad;
  const auto mean_eval = model->bn1->running_mean.clone();
  const auto eval_out = model->forward(x);
  EXPECT_TRUE(torch::equal(model->bn1->running_mean, mean_eval));
  EXPECT_FALSE(torch::allclose(eval_out, train_out));
  // In eval mode a sample's output does not depend on the rest of the batch.
  EXPECT_LT(
      relative_error(model->forward(x.slice(0, 1, 2)), eval_out.slice(0, 1, 2)),
      1e-5);
}

TEST(Features, ForwardStagesAndFeatures) {
  auto model = resnet::resnet18();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({1, 3, 96, 96});
  const auto stages = model->forward_stages(x);
  ASSERT_EQ(stages.size(), 4u);
  EXPECT_EQ(stages[0].sizes(), (std::vector<int64_t>{1, 64, 24, 24}));
  EXPECT_EQ(stages[1].sizes(), (std::vector<int64_t>{1, 128, 12, 12}));
  EXPECT_EQ(stages[2].sizes(), (std::vector<int64_t>{1, 256, 6, 6}));
  EXPECT_EQ(stages[3].sizes(), (std::vector<int64_t>{1, 512, 3, 3}));
  const auto features = model->forward_features(x);
  EXPECT_TRUE(torch::equal(features, stages[3]));
  // forward = fc(global average of the features).
  const auto logits = model->forward(x);
  EXPECT_LT(relative_error(logits, model->fc(features.mean({2, 3}))), 1e-5);

  auto cifar = resnet::resnet20(ResNetOptions().num_classes(10));
  cifar->eval();
  const auto cifar_stages = cifar->forward_stages(torch::randn({2, 3, 32, 32}));
  ASSERT_EQ(cifar_stages.size(), 3u);
  EXPECT_EQ(cifar_stages[2].sizes(), (std::vector<int64_t>{2, 64, 8, 8}));
}

TEST(Features, AnyInputSizeFromTheMinimumUp) {
  auto model = resnet::resnet18(ResNetOptions().num_classes(3));
  model->eval();
  torch::NoGradGuard no_grad;
  for (int64_t h : {32, 33, 57, 100}) {
    EXPECT_EQ(
        model->forward(torch::randn({1, 3, h, 45})).sizes(),
        (std::vector<int64_t>{1, 3}))
        << h;
  }
}

TEST(Features, ResetClassifier) {
  auto model = resnet::resnet18();
  model->reset_classifier(17);
  EXPECT_EQ(model->options().num_classes(), 17);
  EXPECT_EQ(model->fc->weight.sizes(), (std::vector<int64_t>{17, 512}));
  ASSERT_NE(model->named_parameters().find("fc.bias"), nullptr);
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(
      model->forward(torch::randn({2, 3, 32, 32})).sizes(),
      (std::vector<int64_t>{2, 17}));
  // Zero classes: no fc, forward gives the pooled features.
  model->reset_classifier(0);
  EXPECT_EQ(model->named_parameters().find("fc.weight"), nullptr);
  EXPECT_EQ(
      model->forward(torch::randn({2, 3, 32, 32})).sizes(),
      (std::vector<int64_t>{2, 512}));
  // The new classifier follows the network's dtype.
  model->to(torch::kDouble);
  model->reset_classifier(4);
  EXPECT_EQ(model->fc->weight.scalar_type(), torch::kDouble);
  EXPECT_EQ(
      model->forward(torch::randn({1, 3, 32, 32}, torch::kDouble)).sizes(),
      (std::vector<int64_t>{1, 4}));
}

TEST(Norms, GroupNormAndFrozenBatchNorm) {
  auto gn = resnet::resnet18<torch::nn::GroupNorm>();
  // Same affine parameters as batch norm, no running statistics.
  EXPECT_EQ(count_parameters(*gn), 11689512);
  EXPECT_EQ(gn->bn1->options.num_groups(), 32);
  EXPECT_TRUE(gn->named_buffers().is_empty());
  auto gn20 =
      resnet::resnet20<torch::nn::GroupNorm>(ResNetOptions().num_classes(10));
  EXPECT_EQ(gn20->bn1->options.num_groups(), 16); // gcd(32, 16)
  torch::NoGradGuard no_grad;
  EXPECT_EQ(
      gn->forward(torch::randn({1, 3, 64, 64})).sizes(),
      (std::vector<int64_t>{1, 1000}));

  auto frozen = resnet::resnet50<resnet::FrozenBatchNorm2d>(
      ResNetOptions().zero_init_residual(true));
  // Only the convolutions and fc learn: 25,557,032 minus 2 * 26,560 norm
  // channels... counted from batch norm's version instead of by hand.
  auto bn = resnet::resnet50();
  int64_t norm_params = 0;
  for (const auto& item : bn->named_parameters()) {
    if (contains(item.key(), "bn") || contains(item.key(), "downsample.1")) {
      norm_params += item.value().numel();
    }
  }
  EXPECT_EQ(count_parameters(*frozen), 25557032 - norm_params);
  EXPECT_TRUE(
      frozen->named_buffers()["layer1.0.bn3.weight"].eq(0).all().item<bool>());
  const auto x = torch::randn({2, 3, 32, 32});
  frozen->train();
  const auto train_out = frozen->forward(x);
  frozen->eval();
  EXPECT_TRUE(torch::equal(frozen->forward(x), train_out));

  // Frozen batch norm computes eval-mode batch norm.
  resnet::FrozenBatchNorm2d f(6);
  torch::nn::BatchNorm2d b(6);
  for (auto* t : {&b->weight, &b->bias, &b->running_mean}) {
    t->uniform_(-1, 1);
  }
  b->running_var.uniform_(0.5, 2);
  f->weight.copy_(b->weight);
  f->bias.copy_(b->bias);
  f->running_mean.copy_(b->running_mean);
  f->running_var.copy_(b->running_var);
  b->eval();
  const auto y = torch::randn({3, 6, 5, 5});
  EXPECT_LT(relative_error(f(y), b(y)), 1e-6);
}

TEST(Shortcuts, ZeroPadSubsamplesAndPadsChannels) {
  resnet::BasicBlock<> block(resnet::BlockOptions(16, 32).stride(2).shortcut(
      resnet::Shortcut::ZeroPad));
  EXPECT_EQ(block->named_children().find("downsample"), nullptr);
  // With the residual branch at zero the block shows its shortcut.
  block->eval();
  torch::NoGradGuard no_grad;
  block->conv2->weight.zero_();
  const auto x = torch::rand({2, 16, 8, 8});
  const auto out = block(x);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 32, 4, 4}));
  using torch::indexing::Slice;
  const auto sub = x.index(
      {Slice(), Slice(), Slice(0, c10::nullopt, 2), Slice(0, c10::nullopt, 2)});
  EXPECT_TRUE(torch::equal(out.slice(1, 8, 24), sub));
  EXPECT_TRUE(out.slice(1, 0, 8).eq(0).all().item<bool>());
  EXPECT_TRUE(out.slice(1, 24, 32).eq(0).all().item<bool>());
}

TEST(Errors, BadInputsSayWhatWasExpected) {
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  model->eval();
  torch::NoGradGuard no_grad;
  auto msg = error_of([&] { model->forward(torch::randn({3, 32, 32})); });
  EXPECT_TRUE(
      contains(msg, "expected input [N, C, H, W] with C=3, got [3, 32, 32]"))
      << msg;
  msg = error_of([&] { model->forward(torch::randn({1, 4, 32, 32})); });
  EXPECT_TRUE(contains(msg, "with C=3, got [1, 4, 32, 32]")) << msg;
  msg = error_of([&] {
    model->forward(torch::ones({1, 3, 32, 32}, torch::kByte));
  });
  EXPECT_TRUE(contains(msg, "expected a floating-point input, got Byte"))
      << msg;
  msg = error_of([&] { model->forward(torch::randn({1, 3, 31, 64})); });
  EXPECT_TRUE(contains(
      msg,
      "input of 31x64 is smaller than the network's total stride; "
      "expected at least 32x32"))
      << msg;
  msg = error_of([&] { model->forward(torch::Tensor()); });
  EXPECT_TRUE(contains(msg, "undefined")) << msg;
  auto cifar = resnet::resnet20();
  msg = error_of([&] { cifar->forward(torch::randn({1, 3, 3, 3})); });
  EXPECT_TRUE(contains(msg, "expected at least 4x4")) << msg;
  // The model is unharmed by the failed calls.
  EXPECT_EQ(
      model->forward(torch::randn({1, 3, 32, 32})).sizes(),
      (std::vector<int64_t>{1, 10}));
}

TEST(Errors, BadOptions) {
  auto msg =
      error_of([] { resnet::resnet18(ResNetOptions().num_classes(-1)); });
  EXPECT_TRUE(contains(msg, "num_classes must be >= 0, got -1")) << msg;
  msg = error_of([] { resnet::resnet18(ResNetOptions().in_channels(0)); });
  EXPECT_TRUE(contains(msg, "in_channels must be >= 1, got 0")) << msg;
  msg = error_of(
      [] { resnet::ResNet<resnet::BasicBlock<>>(std::vector<int64_t>{}); });
  EXPECT_TRUE(contains(msg, "expected 1 to 4 stages, got 0")) << msg;
  msg = error_of([] {
    resnet::ResNet<resnet::BasicBlock<>>(std::vector<int64_t>{2, 0});
  });
  EXPECT_TRUE(contains(msg, "every stage needs >= 1 block, got 0")) << msg;
  msg = error_of(
      [] { resnet::Bottleneck<>(resnet::BlockOptions(64, 64).stride(0)); });
  EXPECT_TRUE(contains(msg, "stride, dilation, groups and base_width >= 1"))
      << msg;
  msg = error_of([] { resnet::FrozenBatchNorm2d(0); });
  EXPECT_TRUE(contains(msg, "num_features > 0")) << msg;
}

TEST(Network, CustomLayersAndAnyResNet) {
  // A two-stage bottleneck network built directly from the template.
  resnet::ResNet<resnet::Bottleneck<>> net(
      std::vector<int64_t>{1, 2},
      ResNetOptions().num_classes(4).base_channels(16).stem(
          resnet::Stem::Cifar));
  EXPECT_EQ(net->stage_channels(), (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(net->total_stride(), 2);
  EXPECT_NE(net->named_parameters().find("layer2.1.conv3.weight"), nullptr);
  EXPECT_EQ(net->named_parameters().find("layer3.0.conv1.weight"), nullptr);
  resnet::AnyResNet any = net;
  any->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(
      any->forward(torch::randn({2, 3, 8, 8})).sizes(),
      (std::vector<int64_t>{2, 4}));
  EXPECT_NE(any->as<resnet::ResNetImpl<resnet::Bottleneck<>>>(), nullptr);
  EXPECT_EQ(any->as<resnet::ResNetImpl<resnet::BasicBlock<>>>(), nullptr);
}

TEST(Network, CloneIsDeepAndEqual) {
  auto model = tiny_resnet18();
  model->eval();
  auto copy =
      std::dynamic_pointer_cast<resnet::ResNetImpl<resnet::BasicBlock<>>>(
          model->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_FALSE(copy->is_training());
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 16, 16});
  EXPECT_TRUE(torch::equal(copy->forward(x), model->forward(x)));
  copy->fc->weight.add_(1);
  copy->bn1->running_mean.add_(1);
  EXPECT_FALSE(torch::equal(copy->forward(x), model->forward(x)));
  EXPECT_FALSE(torch::equal(copy->bn1->running_mean, model->bn1->running_mean));
}

TEST(Network, DtypesAndMemoryFormats) {
  auto model = tiny_resnet18();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 16, 16});
  const auto reference = model->forward(x);
  const auto cl =
      model->forward(x.contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_LT(relative_error(cl, reference), 1e-5);
  model->to(torch::kDouble);
  const auto d = model->forward(x.to(torch::kDouble));
  EXPECT_EQ(d.scalar_type(), torch::kDouble);
  EXPECT_LT(relative_error(d.to(torch::kFloat), reference), 1e-5);
}

TEST(Device, DefaultDeviceHonoursEnvironment) {
  ::unsetenv("RESNET_DEVICE");
  EXPECT_EQ(
      resnet::default_device().type(),
      torch::cuda::is_available() ? torch::kCUDA : torch::kCPU);
  ::setenv("RESNET_DEVICE", "cpu", 1);
  EXPECT_EQ(resnet::default_device(), torch::Device(torch::kCPU));
  ::setenv("RESNET_DEVICE", "tpu:x", 1);
  auto msg = error_of([] { resnet::default_device(); });
  EXPECT_TRUE(contains(msg, "unknown device 'tpu:x'")) << msg;
  if (!torch::cuda::is_available()) {
    ::setenv("RESNET_DEVICE", "cuda", 1);
    msg = error_of([] { resnet::default_device(); });
    EXPECT_TRUE(contains(msg, "LibTorch sees no CUDA device")) << msg;
  }
  ::unsetenv("RESNET_DEVICE");
}

TEST(Transforms, ResizeCropNormalizeAsTorchvision) {
  const auto image = torch::randint(0, 256, {3, 200, 300}, torch::kByte);
  // The shorter side becomes 256; the longer one is truncated.
  const auto resized = resnet::resize_shorter_side(image, 256);
  EXPECT_EQ(resized.sizes(), (std::vector<int64_t>{3, 256, 384}));
  EXPECT_EQ(resized.scalar_type(), torch::kFloat);
  EXPECT_EQ(
      resnet::resize_shorter_side(torch::zeros({1, 3, 301, 200}), 100).sizes(),
      (std::vector<int64_t>{1, 3, 150, 100}));
  // A constant image stays constant.
  EXPECT_TRUE(torch::allclose(
      resnet::resize_shorter_side(torch::full({3, 50, 70}, 7.0), 32),
      torch::full({3, 32, 44}, 7.0)));
  // Centre crop: offsets round half to even, as Python's round() does:
  // (9 - 4) / 2 = 2.5 -> 2 and (8 - 5) / 2 = 1.5 -> 2.
  const auto columns = [](int64_t n) {
    return torch::arange(n).reshape({1, 1, n}).expand({1, n, n});
  };
  EXPECT_EQ(resnet::center_crop(columns(9), 4)[0][0][0].item<int64_t>(), 2);
  EXPECT_EQ(resnet::center_crop(columns(8), 5)[0][0][0].item<int64_t>(), 2);
  EXPECT_EQ(
      resnet::center_crop(columns(9), 4).sizes(),
      (std::vector<int64_t>{1, 4, 4}));
  const auto x = resnet::preprocess(image);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{1, 3, 224, 224}));
  const auto white =
      resnet::preprocess(torch::full({3, 240, 240}, 255, torch::kByte));
  EXPECT_NEAR(white[0][0][5][5].item<double>(), (1 - 0.485) / 0.229, 1e-5);
  EXPECT_NEAR(white[0][2][5][5].item<double>(), (1 - 0.406) / 0.225, 1e-5);

  auto msg = error_of([] {
    resnet::center_crop(torch::zeros({3, 100, 50}), 64);
  });
  EXPECT_TRUE(contains(msg, "cannot crop 64x64 from an image of 100x50"))
      << msg;
  msg = error_of([] { resnet::preprocess(torch::zeros({5, 5})); });
  EXPECT_TRUE(contains(msg, "expects an image [C, H, W], got [5, 5]")) << msg;
  msg = error_of([] {
    resnet::normalize(torch::zeros({2, 4, 4}), {0.5}, {0.5});
  });
  EXPECT_TRUE(contains(msg, "one mean and std per channel (2)")) << msg;
}

TEST(Version, MatchesPackage) {
  EXPECT_EQ(std::string(resnet::kVersion), RESNET_PROJECT_VERSION);
}

} // namespace

} // namespace test_behaviour
