// Folded batch norm, precision helpers and the CUDA-graph runner.

#include "test_support.h"

#include <resnet/train.h>

#include <cmath>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_inference {

using namespace resnet_test;
using resnet::ResNetOptions;

namespace {

// Gives every batch norm statistics and affine parameters far from their
// defaults, so that folding them is not the identity.
void randomize_norms(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& m : model.modules()) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->running_mean.uniform_(-0.5, 0.5);
      bn->running_var.uniform_(0.5, 2.0);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
    } else if (auto* frozen = m->as<resnet::FrozenBatchNorm2d>()) {
      frozen->running_mean.uniform_(-0.5, 0.5);
      frozen->running_var.uniform_(0.5, 2.0);
      frozen->weight.uniform_(0.5, 1.5);
      frozen->bias.uniform_(-0.2, 0.2);
    }
  }
}

} // namespace

// The parameter and the fixture are outside the anonymous namespace: the
// tests derive from them.
struct FuseCase {
  std::string name;
  std::function<resnet::AnyResNet()> make;
  std::vector<int64_t> input;
};

void PrintTo(const FuseCase& c, std::ostream* os) {
  *os << c.name;
}

namespace {

std::vector<FuseCase> fuse_cases() {
  return {
      {"resnet18", [] { return resnet::create("resnet18"); }, {2, 3, 64, 64}},
      {"resnet50", [] { return resnet::create("resnet50"); }, {2, 3, 64, 48}},
      {"resnext50_32x4d",
       [] { return resnet::create("resnext50_32x4d"); },
       {1, 3, 64, 64}},
      {"wide_resnet50_2",
       [] { return resnet::create("wide_resnet50_2"); },
       {1, 3, 32, 32}},
      {"resnet20_zero_pad",
       [] {
         return resnet::create("resnet20", ResNetOptions().num_classes(10));
       },
       {3, 3, 32, 32}},
      {"resnet32_projection",
       [] {
         return resnet::create(
             "resnet32",
             ResNetOptions().num_classes(10).shortcut(
                 resnet::Shortcut::Projection));
       },
       {2, 3, 32, 32}},
      {"resnet50_dilated_grey_no_fc",
       [] {
         return resnet::create(
             "resnet50",
             ResNetOptions()
                 .num_classes(0)
                 .in_channels(1)
                 .replace_stride_with_dilation({false, true, true}));
       },
       {1, 1, 64, 64}},
      {"resnet34_frozen_bn",
       [] {
         return resnet::AnyResNet(
             resnet::resnet34<resnet::FrozenBatchNorm2d>());
       },
       {2, 3, 64, 64}},
  };
}

} // namespace

class FuseForInference : public ::testing::TestWithParam<FuseCase> {};

namespace {

// oneDNN's fused convolutions are registered in LibTorch 2.x builds with
// oneDNN; 1.13 has none and falls back to the blocked layout.
resnet::CpuKernels expected_layout() {
  return AT_MKLDNN_ENABLED() ? resnet::CpuKernels::OneDnnLayout
                             : resnet::CpuKernels::Aten;
}

resnet::CpuKernels expected_fused_kernels() {
  return AT_MKLDNN_ENABLED() && TORCH_VERSION_MAJOR >= 2
      ? resnet::CpuKernels::OneDnnFused
      : expected_layout();
}

} // namespace

TEST_P(FuseForInference, MatchesTheEvalModeNetwork) {
  torch::manual_seed(0);
  auto model = GetParam().make();
  randomize_norms(*model);
  model->eval();
  const auto before = resnet::state_dict(*model);
  const auto x = torch::randn(GetParam().input);
  torch::NoGradGuard no_grad;
  const auto expected = model->forward(x);
  const auto expected_features = model->forward_features(x);

  for (const auto& [options, kernels] :
       std::vector<std::pair<resnet::FuseOptions, resnet::CpuKernels>>{
           {resnet::FuseOptions(), expected_fused_kernels()},
           {resnet::FuseOptions().onednn_fused(false), expected_layout()},
           {resnet::FuseOptions().mkldnn(false), resnet::CpuKernels::Aten}}) {
    SCOPED_TRACE(resnet::to_string(kernels));
    auto fused = resnet::fuse_for_inference(model, options);
    EXPECT_EQ(fused->cpu_kernels(), kernels);
    EXPECT_FALSE(fused->is_training());
    const auto out = fused->forward(x);
    ASSERT_EQ(out.sizes(), expected.sizes());
    EXPECT_LE(relative_error(out, expected), 1e-5);
    EXPECT_LE(
        relative_error(fused->forward_features(x), expected_features), 1e-5);
    // Prepacked weights are reused, not rebuilt wrongly, on a second call.
    EXPECT_LE(relative_error(fused->forward(x), expected), 1e-5);
    EXPECT_FALSE(out.is_mkldnn());
  }
  // The source network is untouched.
  const auto after = resnet::state_dict(*model);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(torch::equal(after[i].second, before[i].second))
        << after[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Architectures,
    FuseForInference,
    ::testing::ValuesIn(fuse_cases()),
    [](const auto& p) { return p.param.name; });

TEST(Fused, OneDnnFusedKernelsAreFoundWhereLibTorchHasThem) {
  EXPECT_EQ(
      resnet::detail::OneDnnFused::available(),
      expected_fused_kernels() == resnet::CpuKernels::OneDnnFused);
  auto fused = resnet::fuse_for_inference(resnet::resnet18());
  EXPECT_EQ(fused->cpu_kernels(), expected_fused_kernels());
  {
    torch::NoGradGuard no_grad;
    fused->forward(torch::randn({1, 3, 64, 64}));
  }
  EXPECT_EQ(
      fused->uses_onednn_fused(),
      expected_fused_kernels() == resnet::CpuKernels::OneDnnFused);
  EXPECT_STREQ(
      resnet::to_string(resnet::CpuKernels::OneDnnFused), "onednn-fused");
  if (!resnet::detail::OneDnnFused::available()) {
    EXPECT_TRUE(contains(
        error_of([&] { fused->conv1->use_onednn_fused(true); }),
        "lacks oneDNN's fused convolution operators"));
  }
}

TEST(Fused, NewInputSizesRepackAndBlockInputsAreKept) {
  torch::manual_seed(2);
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  randomize_norms(*model);
  model->eval();
  auto fused = resnet::fuse_for_inference(model);
  torch::NoGradGuard no_grad;
  // Weights prepacked for one input size still give the right answer for
  // another, and for the first again.
  for (const auto& sizes : std::vector<std::vector<int64_t>>{
           {2, 3, 64, 64}, {1, 3, 96, 80}, {2, 3, 64, 64}}) {
    const auto x = torch::randn(sizes);
    EXPECT_LE(relative_error(fused->forward(x), model->forward(x)), 1e-5)
        << torch::IntArrayRef(sizes);
  }
  // A block with an identity shortcut leaves its input as it was: the
  // fused addition writes only into tensors the block made.
  auto block = fused->stages[0]->ptr<resnet::FusedBlockImpl>(1);
  ASSERT_TRUE(block->downsample.is_empty());
  const auto input = torch::randn({1, 64, 16, 16})
                         .relu()
                         .contiguous(torch::MemoryFormat::ChannelsLast);
  const auto copy = input.clone();
  const auto out = block->forward(input);
  EXPECT_TRUE(torch::equal(input, copy));
  EXPECT_FALSE(torch::equal(out, copy));
  // A non-contiguous NCHW input runs too.
  const auto wide = torch::randn({2, 3, 64, 128});
  const auto strided = wide.slice(3, 0, 128, 2);
  EXPECT_LE(
      relative_error(fused->forward(strided), model->forward(strided)), 1e-5);
}

// An input the convolution cannot take (smaller than its kernel) gets ATen's
// error, which names the sizes, not oneDNN's, and leaves the fused kernels in
// use for the inputs that follow.
TEST(Fused, InputsSmallerThanTheKernelGetATensError) {
  torch::manual_seed(4);
  const std::vector<int64_t> one{1, 1};
  resnet::FusedConv2d conv(
      torch::randn({8, 4, 3, 3}),
      torch::randn({8}),
      one,
      std::vector<int64_t>{0, 0},
      one,
      1);
  const bool onednn =
      expected_fused_kernels() == resnet::CpuKernels::OneDnnFused;
  conv->use_onednn_fused(onednn);
  torch::NoGradGuard no_grad;
  for (int round = 0; round < 2; ++round) {
    const auto message = error_of([&] {
      conv->forward(torch::randn({1, 4, 2, 2}), resnet::PostOp::Relu);
    });
    EXPECT_TRUE(contains(message, "Kernel size can't be greater")) << message;
    EXPECT_EQ(conv->uses_onednn_fused(), onednn);
    const auto x = torch::randn({2, 4, 6, 6});
    const auto expected = torch::conv2d(x, conv->weight, conv->bias).relu();
    EXPECT_LE(
        relative_error(conv->forward(x, resnet::PostOp::Relu), expected), 1e-5);
  }
}

TEST(Fused, BlocksFuseThemselves) {
  torch::manual_seed(3);
  torch::NoGradGuard no_grad;
  resnet::Bottleneck<> projection(resnet::BlockOptions(64, 32).stride(2));
  resnet::BasicBlock<> zero_pad(resnet::BlockOptions(16, 32).stride(2).shortcut(
      resnet::Shortcut::ZeroPad));
  resnet::BasicBlock<resnet::FrozenBatchNorm2d> identity(
      resnet::BlockOptions(16, 16));
  for (auto* block : std::vector<torch::nn::Module*>{
           projection.get(), zero_pad.get(), identity.get()}) {
    randomize_norms(*block);
    block->eval();
  }
  const auto x64 = torch::randn({2, 64, 16, 16});
  const auto x16 = torch::randn({2, 16, 16, 16});
  auto fused_projection = resnet::fuse_block(projection, "p");
  EXPECT_FALSE(fused_projection->downsample.is_empty());
  EXPECT_EQ(fused_projection->convs.size(), 3u);
  EXPECT_LE(
      relative_error(fused_projection->forward(x64), projection->forward(x64)),
      1e-5);
  EXPECT_LE(
      relative_error(
          resnet::fuse_block(zero_pad)->forward(x16), zero_pad->forward(x16)),
      1e-5);
  EXPECT_LE(
      relative_error(
          resnet::fuse_block(identity)->forward(x16), identity->forward(x16)),
      1e-5);

  // What cannot be folded is refused by name, never dropped.
  resnet::BasicBlock<> se(
      resnet::BlockOptions(16, 16).attention(resnet::Attention::SqueezeExcite));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::fuse_block(se, "layer9.9"); }),
      "cannot fuse layer9.9: attention modules"));
  auto model = resnet::resnet18();
  model->stages[0]->push_back(torch::nn::Identity());
  const auto message = error_of([&] { resnet::fuse_for_inference(model); });
  EXPECT_TRUE(contains(message, "layer1.2 is torch::nn::Identity")) << message;
  EXPECT_TRUE(contains(message, "not one of the network's blocks")) << message;
}

TEST(Fused, StateNamesFollowTheSourceNetwork) {
  auto model = resnet::resnet50();
  auto fused = resnet::fuse_for_inference(model);
  const auto state = fused->named_buffers();
  for (const char* name :
       {"conv1.weight",
        "conv1.bias",
        "layer1.0.conv1.weight",
        "layer1.0.conv3.bias",
        "layer1.0.downsample.weight",
        "layer4.2.conv2.bias"}) {
    EXPECT_NE(state.find(name), nullptr) << name;
  }
  for (const auto& item : state) {
    EXPECT_FALSE(contains(item.key(), "bn")) << item.key();
    EXPECT_FALSE(item.value().requires_grad()) << item.key();
  }
  // Only fc remains as parameters, frozen; 53 convolutions carry a bias.
  EXPECT_EQ(fused->parameters().size(), 2u);
  for (const auto& p : fused->parameters()) {
    EXPECT_FALSE(p.requires_grad());
  }
  EXPECT_EQ(state.size(), 2u * 53);
  EXPECT_TRUE(torch::equal(fused->fc->weight, model->fc->weight));
  EXPECT_NE(
      fused->fc->weight.data_ptr(), model->fc->weight.data_ptr()); // a copy
}

TEST(Fused, InferenceOnlyAndChecksItsInput) {
  auto fused = resnet::fuse_for_inference(resnet::resnet18());
  EXPECT_TRUE(contains(error_of([&] { fused->train(); }), "inference-only"));
  fused->eval(); // accepted
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(contains(
      error_of([&] {
        fused->forward(torch::randn({1, 1, 64, 64}));
      }),
      "expected input [N, C, H, W] with C=3, got [1, 1, 64, 64]"));
  EXPECT_TRUE(contains(
      error_of([&] {
        fused->forward(torch::randn({1, 3, 16, 16}));
      }),
      "expected at least 32x32"));
  EXPECT_TRUE(contains(
      error_of([&] {
        fused->forward(torch::randn({1, 3, 64, 64}).to(torch::kDouble));
      }),
      "but the network is Float"));
  EXPECT_TRUE(contains(
      error_of([&] {
        fused->forward(torch::ones({1, 3, 64, 64}, torch::kLong));
      }),
      "floating-point"));
}

TEST(Fused, RefusesNormsThatCannotBeFolded) {
  auto gn = resnet::resnet18<torch::nn::GroupNorm>();
  const auto message = error_of([&] { resnet::fuse_for_inference(gn); });
  EXPECT_TRUE(contains(message, "folds BatchNorm2d and FrozenBatchNorm2d"))
      << message;
  EXPECT_TRUE(contains(message, "conv1")) << message;
}

TEST(Fused, OtherDtypesRunDenseAndWeightUpdatesAreSeen) {
  torch::manual_seed(1);
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  randomize_norms(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 64, 64});

  // float64: the dense path, folded in float64 and exact to its rounding.
  auto fused = resnet::fuse_for_inference(model);
  EXPECT_TRUE(fused->uses_mkldnn() == static_cast<bool>(AT_MKLDNN_ENABLED()));
  auto model64 =
      std::dynamic_pointer_cast<resnet::ResNetBaseImpl>(model->clone());
  model64->to(torch::kDouble);
  auto fused64 = resnet::fuse_for_inference(*model64);
  EXPECT_LE(
      relative_error(
          fused64->forward(x.to(torch::kDouble)),
          model64->forward(x.to(torch::kDouble))),
      1e-12);
  // Moving a fused network keeps it working.
  fused->to(torch::kDouble);
  EXPECT_LE(
      relative_error(
          fused->forward(x.to(torch::kDouble)).to(torch::kFloat),
          model->forward(x)),
      1e-5);

  // bfloat16: the fused network is as close to float32 as the eager network
  // in bfloat16 is, up to a few roundings of bfloat16 (8 significant bits):
  // a bound that follows the processor's bfloat16 kernels instead of one
  // tuned on one machine.
  auto fused16 = resnet::fuse_for_inference(model);
  resnet::cast_floating(*fused16, torch::kBFloat16);
  auto eager16 =
      std::dynamic_pointer_cast<resnet::ResNetBaseImpl>(model->clone());
  resnet::cast_floating(*eager16, torch::kBFloat16);
  const auto expected = model->forward(x);
  const auto x16 = x.to(torch::kBFloat16);
  const double eager_error =
      relative_error(eager16->forward(x16).to(torch::kFloat), expected);
  const double fused_error =
      relative_error(fused16->forward(x16).to(torch::kFloat), expected);
  const double bf16_epsilon = std::ldexp(1.0, -8);
  std::cout << "bfloat16 relative error: eager " << eager_error << ", fused "
            << fused_error << "\n";
  EXPECT_LE(eager_error, 64 * bf16_epsilon);
  EXPECT_LE(fused_error, 2 * eager_error + 4 * bf16_epsilon);

  // Changing a folded weight in place changes the output on both paths, the
  // prepacked one included.
  auto a = resnet::fuse_for_inference(model);
  auto b =
      resnet::fuse_for_inference(model, resnet::FuseOptions().mkldnn(false));
  a->forward(x); // prepacks
  a->conv1->weight.mul_(-1);
  b->conv1->weight.mul_(-1);
  const auto changed = b->forward(x);
  EXPECT_GT(relative_error(changed, expected), 1e-2);
  EXPECT_LE(relative_error(a->forward(x), changed), 1e-5);
}

TEST(Precision, ChannelsLastKeepsParametersAndResults) {
  torch::manual_seed(2);
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  randomize_norms(*model);
  const auto x = torch::randn({2, 3, 64, 64});
  torch::optim::SGD optimizer(model->parameters(), 0.1);
  const auto conv1 = model->conv1->weight;
  model->eval();
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = model->forward(x);
  }
  resnet::to_channels_last(*model);
  EXPECT_TRUE(model->conv1->weight.is_same(conv1));
  EXPECT_TRUE(
      model->conv1->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(
      model->stages[3]
          ->ptr(0)
          ->as<resnet::BasicBlock<>>()
          ->conv2->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
  const auto xl = x.contiguous(torch::MemoryFormat::ChannelsLast);
  {
    torch::NoGradGuard no_grad;
    EXPECT_LE(relative_error(model->forward(xl), expected), 1e-5);
  }
  // The optimizer built before still trains the converted parameters.
  model->train();
  const auto before = model->conv1->weight.clone();
  optimizer.zero_grad();
  torch::cross_entropy_loss(model->forward(xl), torch::tensor({1, 2}))
      .backward();
  optimizer.step();
  EXPECT_FALSE(torch::equal(model->conv1->weight, before));
}

TEST(Precision, CastFloatingLeavesIntegerBuffers) {
  auto model = resnet::resnet20(ResNetOptions().num_classes(10));
  resnet::cast_floating(*model, torch::kBFloat16);
  for (const auto& item : model->named_parameters()) {
    EXPECT_EQ(item.value().scalar_type(), torch::kBFloat16) << item.key();
  }
  for (const auto& item : model->named_buffers()) {
    EXPECT_EQ(
        item.value().scalar_type(),
        contains(item.key(), "num_batches_tracked") ? torch::kLong
                                                    : torch::kBFloat16)
        << item.key();
  }
  EXPECT_TRUE(contains(
      error_of([&] { resnet::cast_floating(*model, torch::kInt); }),
      "floating-point dtype"));
}

TEST(Precision, AutocastScopesMixedPrecision) {
  auto model = resnet::resnet20(ResNetOptions().num_classes(10));
  const auto x = torch::randn({4, 3, 32, 32});
  EXPECT_FALSE(resnet::Autocast::is_enabled(torch::kCPU));
  torch::Tensor loss;
  {
    resnet::Autocast autocast(torch::kCPU, torch::kBFloat16);
    EXPECT_TRUE(resnet::Autocast::is_enabled(torch::kCPU));
    EXPECT_EQ(model->conv1(x).scalar_type(), torch::kBFloat16);
    {
      resnet::Autocast off(torch::kCPU, torch::kBFloat16, /*enabled=*/false);
      EXPECT_EQ(model->conv1(x).scalar_type(), torch::kFloat);
    }
    EXPECT_TRUE(resnet::Autocast::is_enabled(torch::kCPU));
    loss = torch::cross_entropy_loss(
        model->forward(x), torch::tensor({0, 1, 2, 3}));
  }
  EXPECT_FALSE(resnet::Autocast::is_enabled(torch::kCPU));
  EXPECT_EQ(model->conv1(x).scalar_type(), torch::kFloat);
  loss.backward();
  // Parameters and their gradients stay float32.
  EXPECT_EQ(model->conv1->weight.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::isfinite(model->conv1->weight.grad()).all().item<bool>());
  EXPECT_TRUE(contains(
      error_of([] { resnet::Autocast a(torch::kCPU, torch::kFloat16); }),
      "bfloat16 only"));
}

TEST(Precision, GradScalerSkipsOverflowsAndAdaptsTheScale) {
  auto w = torch::ones({3}, torch::requires_grad());
  torch::optim::SGD optimizer({w}, 0.5);
  resnet::GradScaler scaler(
      resnet::GradScalerOptions().init_scale(1024).growth_interval(2));

  const auto run = [&](const torch::Tensor& target) {
    optimizer.zero_grad();
    scaler.scale((w * target).sum()).backward();
    const bool stepped = scaler.step(optimizer);
    scaler.update();
    return stepped;
  };
  // d/dw sum(w * t) = t: unscaled before the step.
  EXPECT_TRUE(run(torch::tensor({1.0f, 2.0f, 3.0f})));
  EXPECT_TRUE(torch::allclose(w, torch::tensor({0.5f, 0.0f, -0.5f})));
  EXPECT_EQ(scaler.get_scale(), 1024);
  EXPECT_TRUE(run(torch::tensor({0.0f, 0.0f, 0.0f})));
  EXPECT_EQ(scaler.get_scale(), 2048); // two clean steps: grown
  const auto before = w.clone();
  EXPECT_FALSE(run(torch::tensor({1.0f, INFINITY, 1.0f})));
  EXPECT_TRUE(torch::equal(w, before)); // skipped
  EXPECT_EQ(scaler.get_scale(), 1024); // backed off

  resnet::GradScaler off(resnet::GradScalerOptions().enabled(false));
  const auto loss = torch::tensor(3.0);
  EXPECT_TRUE(torch::equal(off.scale(loss), loss));
  EXPECT_THROW(
      resnet::GradScaler(resnet::GradScalerOptions().backoff_factor(2)),
      c10::Error);
}

TEST(CudaGraph, BuildFlagMatchesLibTorch) {
  EXPECT_EQ(resnet::kWithCuda, RESNET_TEST_EXPECT_CUDA != 0);
  auto model = resnet::resnet18();
  auto fused = resnet::fuse_for_inference(model);
  const auto message = error_of([&] {
    resnet::CudaGraphRunner runner(
        [&](const torch::Tensor& x) { return fused->forward(x); },
        torch::randn({1, 3, 64, 64}));
  });
  EXPECT_TRUE(contains(
      message,
      resnet::kWithCuda ? "captures CUDA work; the example input is on cpu"
                        : "built without"))
      << message;
}

TEST(CudaGraph, ReplayMatchesEagerOnTheGpu) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  const resnet_test::StrictCudaMath strict;
  torch::manual_seed(3);
  auto model = resnet::resnet50();
  randomize_norms(*model);
  model->to(torch::kCUDA);
  model->eval();
  auto fused = resnet::fuse_for_inference(model);
  const auto x = torch::randn({2, 3, 96, 96}, torch::kCUDA);
  resnet::CudaGraphRunner runner(
      [&](const torch::Tensor& in) { return fused->forward(in); }, x);
  torch::NoGradGuard no_grad;
  const auto expected = model->forward(x);
  EXPECT_LE(relative_error(runner(x), expected), 1e-5);
  const auto y = torch::randn({2, 3, 96, 96}, torch::kCUDA);
  EXPECT_LE(relative_error(runner(y), model->forward(y)), 1e-5);
  EXPECT_TRUE(contains(
      error_of([&] {
        runner(torch::randn({1, 3, 96, 96}, torch::kCUDA));
      }),
      "was captured for"));
}

TEST(Fused, CudnnOptionIsKeptAndCpuInputsIgnoreIt) {
  torch::manual_seed(6);
  auto model = resnet::resnet18(ResNetOptions().num_classes(5));
  randomize_norms(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 64, 64});
  const auto expected = model->forward(x);
  for (bool on : {true, false}) {
    auto fused = resnet::fuse_for_inference(
        model, resnet::FuseOptions().cudnn_fused(on));
    EXPECT_EQ(fused->uses_cudnn_fused(), on);
    for (const auto& module : fused->modules(/*include_self=*/false)) {
      if (const auto* conv = module->as<resnet::FusedConv2dImpl>()) {
        EXPECT_EQ(conv->uses_cudnn_fused(), on);
      }
    }
    EXPECT_LE(relative_error(fused->forward(x), expected), 1e-5);
  }
  EXPECT_TRUE(resnet::fuse_for_inference(model)->uses_cudnn_fused());
}

// cuDNN's fused convolutions (convolution, bias, residual addition, ReLU in
// one call) against the eval-mode network, in every dtype they take, in both
// memory formats, with and without the fusion.
TEST(Fused, CudnnFusedMatchesTheEvalModeNetworkOnTheGpu) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  const resnet_test::StrictCudaMath strict;
  torch::NoGradGuard no_grad;
  for (const char* arch : {"resnet18", "resnext50_32x4d"}) {
    torch::manual_seed(7);
    auto model = resnet::create(arch, ResNetOptions().num_classes(10));
    randomize_norms(*model);
    model->to(torch::kCUDA);
    model->eval();
    const auto x = torch::randn({2, 3, 64, 64}, torch::kCUDA);
    const auto reference = model->forward(x);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
      for (bool channels_last : {false, true}) {
        auto eager =
            std::dynamic_pointer_cast<resnet::ResNetBaseImpl>(model->clone());
        const auto format = channels_last ? torch::MemoryFormat::ChannelsLast
                                          : torch::MemoryFormat::Contiguous;
        const auto input = x.to(dtype).contiguous(format);
        resnet::cast_floating(*eager, dtype);
        if (channels_last) {
          resnet::to_channels_last(*eager);
        }
        const double eager_error = relative_error(
            eager->forward(input).to(torch::kFloat32), reference);
        for (bool cudnn : {true, false}) {
          auto fused = resnet::fuse_for_inference(
              *model, resnet::FuseOptions().cudnn_fused(cudnn));
          resnet::cast_floating(*fused, dtype);
          if (channels_last) {
            resnet::to_channels_last(*fused);
          }
          const auto out = fused->forward(input);
          const double error =
              relative_error(out.to(torch::kFloat32), reference);
          const std::string what = std::string(arch) + " " +
              c10::toString(dtype) + (channels_last ? " channels_last" : "") +
              (cudnn ? " cudnn-fused" : " aten");
          EXPECT_EQ(out.scalar_type(), dtype) << what;
          // Every convolution ran fused (none fell back to ATen's kernels).
          EXPECT_EQ(fused->uses_cudnn_fused(), cudnn) << what;
          for (const auto& module : fused->modules(/*include_self=*/false)) {
            if (const auto* conv = module->as<resnet::FusedConv2dImpl>()) {
              EXPECT_EQ(conv->uses_cudnn_fused(), cudnn) << what;
            }
          }
          if (dtype == torch::kFloat32) {
            EXPECT_LE(error, 1e-5) << what;
          } else {
            // Within a few roundings of the eager network in that dtype.
            EXPECT_LE(error, 2 * eager_error + 1e-2) << what;
          }
        }
      }
    }
  }
}

TEST(CudaGraphTrainStep, RefusesAdamAndInputsOffTheGpu) {
  auto model = resnet::resnet20();
  const auto loss = [&](const torch::Tensor& x, const torch::Tensor& y) {
    return torch::cross_entropy_loss(model->forward(x), y);
  };
  const auto x = torch::randn({2, 3, 32, 32});
  const auto y = torch::randint(10, {2});
  torch::optim::Adam adam(model->parameters());
  EXPECT_TRUE(contains(
      error_of(
          [&] { resnet::CudaGraphTrainStep step(*model, adam, loss, x, y); }),
      "captures SGD steps only"));
  resnet::ForeachSGD sgd(
      model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto before = model->conv1->weight.clone();
  EXPECT_TRUE(contains(
      error_of(
          [&] { resnet::CudaGraphTrainStep step(*model, sgd, loss, x, y); }),
      resnet::kWithCuda ? "captures CUDA work" : "needs CUDA"));
  // The same from a function that returns the logits with the loss.
  const auto loss_and_logits = [&](const torch::Tensor& images,
                                   const torch::Tensor& labels) {
    auto logits = model->forward(images);
    return std::make_pair(torch::cross_entropy_loss(logits, labels), logits);
  };
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::CudaGraphTrainStep step(*model, adam, loss_and_logits, x, y);
      }),
      "captures SGD steps only"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::CudaGraphTrainStep step(*model, sgd, loss_and_logits, x, y);
      }),
      resnet::kWithCuda ? "captures CUDA work" : "needs CUDA"));
  // Refused before anything trained.
  EXPECT_TRUE(torch::equal(model->conv1->weight, before));
}

// Building the captured step trains nothing; replayed, it trains as the
// eager step does, batch after batch, following a learning-rate schedule.
TEST(CudaGraphTrainStep, ReplaysMatchEagerStepsOnTheGpu) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  // The same kernels on both sides: deterministic cuDNN (its atomics in the
  // weight gradients differ in the last bit from run to run, which steps
  // through batch norm amplify to 1e-3 in four steps), and learning rates read
  // from tensors in the eager steps too (a rate as a number rounds otherwise).
  const resnet_test::StrictCudaMath strict(/*deterministic=*/true);
  torch::manual_seed(8);
  auto eager = resnet::resnet18(
      ResNetOptions().num_classes(10).stem(resnet::Stem::Cifar));
  eager->to(torch::kCUDA);
  auto graphed = std::dynamic_pointer_cast<resnet::ResNetBaseImpl>(
      eager->clone(torch::Device(torch::kCUDA)));
  const auto options =
      torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-4);
  resnet::ForeachSGD eager_sgd(eager->parameters(), options);
  resnet::ForeachSGD graphed_sgd(graphed->parameters(), options);
  eager_sgd.read_learning_rates_from_tensors();
  const auto batch = [](int64_t seed) {
    torch::manual_seed(seed);
    return std::make_pair(
        torch::randn({32, 3, 32, 32}).to(torch::kCUDA),
        torch::randint(10, {32}).to(torch::kCUDA));
  };
  const auto rate = [](int64_t k) { return 0.05 / static_cast<double>(k); };
  const auto eager_step = [&](const torch::Tensor& x, const torch::Tensor& y) {
    eager_sgd.zero_grad();
    auto logits = eager->forward(x);
    auto loss = torch::cross_entropy_loss(logits, y);
    loss.backward();
    eager_sgd.step();
    return std::make_pair(loss.detach(), logits.detach());
  };
  const auto expect_same_network = [&](const std::string& when) {
    const auto eager_state = eager->named_parameters();
    for (const auto& p : graphed->named_parameters()) {
      EXPECT_LE(relative_error(p.value(), eager_state[p.key()]), 1e-4)
          << p.key() << " " << when;
    }
    const auto eager_buffers = eager->named_buffers();
    for (const auto& b : graphed->named_buffers()) {
      const auto& e = eager_buffers[b.key()];
      if (b.value().is_floating_point()) {
        EXPECT_LE(relative_error(b.value(), e), 1e-4) << b.key() << " " << when;
      } else {
        EXPECT_TRUE(torch::equal(b.value(), e)) << b.key() << " " << when;
      }
    }
  };
  const auto first = batch(0);
  const auto& x0 = first.first;
  const auto& y0 = first.second;
  // The logits come back with the loss, from the graph's buffer.
  resnet::CudaGraphTrainStep step(
      *graphed,
      graphed_sgd,
      [&](const torch::Tensor& x, const torch::Tensor& y) {
        auto logits = graphed->forward(x);
        return std::make_pair(torch::cross_entropy_loss(logits, y), logits);
      },
      x0,
      y0,
      /*warmup=*/2);
  // The warm-up and capture left weights, statistics and momentum alone.
  expect_same_network("after the capture");
  for (int64_t k = 1; k <= 4; ++k) {
    const auto next = batch(k);
    resnet::set_learning_rate(eager_sgd, rate(k));
    resnet::set_learning_rate(graphed_sgd, rate(k));
    const auto [expected_loss, expected_logits] =
        eager_step(next.first, next.second);
    const auto loss = step(next.first, next.second);
    EXPECT_LE(relative_error(loss, expected_loss), 1e-4) << "step " << k;
    ASSERT_TRUE(step.output().defined());
    EXPECT_LE(relative_error(step.output(), expected_logits), 1e-4)
        << "step " << k;
  }
  expect_same_network("after 4 steps");
  EXPECT_TRUE(contains(
      error_of([&] { step(x0.narrow(0, 0, 4), y0.narrow(0, 0, 4)); }),
      "was captured for images"));
  // run() takes any batch: a shorter one runs the same step eagerly, one
  // shaped like the capture is replayed.
  for (const int64_t n : {int64_t{4}, x0.size(0)}) {
    const int64_t k = n == 4 ? 5 : 6;
    const auto next = batch(k);
    const auto x = next.first.narrow(0, 0, n), y = next.second.narrow(0, 0, n);
    resnet::set_learning_rate(eager_sgd, rate(k));
    resnet::set_learning_rate(graphed_sgd, rate(k));
    const auto [expected_loss, expected_logits] = eager_step(x, y);
    EXPECT_LE(relative_error(step.run(x, y), expected_loss), 1e-4) << n;
    ASSERT_EQ(step.output().size(0), n);
    EXPECT_LE(relative_error(step.output(), expected_logits), 1e-4) << n;
  }
  expect_same_network("after an eager and a replayed run()");

  // torch::optim::SGD's rate is frozen in the graph: a change is refused.
  torch::optim::SGD plain(graphed->parameters(), options);
  resnet::CudaGraphTrainStep frozen(
      *graphed,
      plain,
      [&](const torch::Tensor& x, const torch::Tensor& y) {
        return torch::cross_entropy_loss(graphed->forward(x), y);
      },
      x0,
      y0);
  frozen(x0, y0);
  EXPECT_FALSE(frozen.output().defined()); // the function gave only the loss
  resnet::set_learning_rate(plain, 0.01);
  EXPECT_TRUE(contains(error_of([&] { frozen(x0, y0); }), "froze"));
}

TEST(CpuMemoryCache, ReusesBlocksAndKeepsResults) {
  using resnet::detail::CpuMemoryCache;
  for (size_t n :
       {size_t{65536},
        size_t{100000},
        size_t{1} << 20,
        (size_t{1} << 20) + 1,
        size_t{123456789}}) {
    const size_t c = CpuMemoryCache::size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LE(c, n + n / 8) << n;
  }
  EXPECT_EQ(CpuMemoryCache::size_class(size_t{1} << 20), size_t{1} << 20);

  torch::manual_seed(4);
  auto model = resnet::resnet18(ResNetOptions().num_classes(10));
  randomize_norms(*model);
  model->eval();
  auto fused = resnet::fuse_for_inference(model);
  const auto x = torch::randn({2, 3, 64, 64});
  torch::NoGradGuard no_grad;
  const auto expected = model->forward(x);
  const auto kept = torch::full({1000, 1000}, 7.0f); // before the cache

  resnet::enable_cpu_memory_cache();
  const auto before = resnet::cpu_memory_cache_stats();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(torch::equal(model->forward(x), expected));
    EXPECT_LE(relative_error(fused->forward(x), expected), 1e-5);
  }
  const auto after = resnet::cpu_memory_cache_stats();
  // The second and third passes find their activations in the cache.
  EXPECT_GT(after.hits, before.hits + 20);
  EXPECT_GT(after.cached_bytes, 0u);
  auto made = torch::ones({512, 512}); // through the cache
  resnet::empty_cpu_memory_cache();
  EXPECT_EQ(resnet::cpu_memory_cache_stats().cached_bytes, 0u);

  resnet::disable_cpu_memory_cache();
  EXPECT_EQ(resnet::cpu_memory_cache_stats().cached_bytes, 0u);
  // Tensors from either allocator outlive the switches.
  EXPECT_EQ(made.sum().item<float>(), 512.0f * 512.0f);
  EXPECT_EQ(kept.sum().item<float>(), 7.0e6f);
  EXPECT_TRUE(torch::equal(model->forward(x), expected));
}

} // namespace test_inference
