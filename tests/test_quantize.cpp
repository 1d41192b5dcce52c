// Int8 inference: the observers that choose activation ranges, the uint8
// pooling, and quantized networks against the float32 ones they came from.

#include "test_support.h"

#include <resnet/inference/quantize.h>
#include <resnet/resnet.h>

#include <cmath>

using resnet_test::contains;
using resnet_test::error_of;

namespace {

// A network whose batch norms hold statistics of real activations (a few
// passes in training mode), so that its activations have the spread of a
// trained one's, fused for inference.
resnet::InferenceResNet trained_like(
    const std::string& arch,
    resnet::ResNetOptions options,
    int64_t size) {
  torch::manual_seed(7);
  auto model = resnet::create(arch, options);
  model->train();
  {
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 4; ++i) {
      model->forward(torch::randn({8, options.in_channels(), size, size}));
    }
  }
  model->eval();
  return resnet::fuse_for_inference(*model);
}

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// The quantization an observer of `kind` chooses for `values`.
resnet::QuantParams observed(
    const torch::Tensor& values,
    const std::string& kind) {
  resnet::detail::RangeObserver o;
  const auto options = resnet::QuantizeOptions().observer(kind);
  o.see_range(values);
  o.see_values(values, options.bins());
  return o.choose(options);
}

} // namespace

TEST(Int8, ObserversClipOutliersThatMinMaxKeeps) {
  torch::manual_seed(1);
  // ReLU-like values up to about 5, and one outlier at 100 that costs the
  // rest more rounding error than clipping it costs.
  auto values = torch::randn({1000000}).abs();
  values[0] = 100;
  const auto minmax = observed(values, "minmax");
  EXPECT_EQ(minmax.zero_point, 0);
  EXPECT_NEAR(minmax.scale * 255, 100, 1e-3);
  const auto percentile = observed(values, "percentile");
  EXPECT_EQ(percentile.zero_point, 0);
  EXPECT_GT(percentile.scale * 255, 2.5); // keeps the bulk
  EXPECT_LT(percentile.scale * 255, 8); // drops the outlier
  // The "mse" observer's range has the least error of the three when the
  // values are quantized with it.
  const auto error = [&values](resnet::QuantParams q) {
    const auto z = static_cast<double>(q.zero_point);
    const auto back =
        (torch::round(values / q.scale).add(z).clamp(0, 255) - z) * q.scale;
    return (back - values).pow(2).mean().item<double>();
  };
  const auto mse = observed(values, "mse");
  EXPECT_LT(mse.scale * 255, 100);
  EXPECT_LE(error(mse), 1.02 * error(minmax));
  EXPECT_LE(error(mse), 1.02 * error(percentile));
  // Signed values: an asymmetric range with a zero point inside it.
  const auto signed_q = observed(torch::randn({100000}) + 1, "mse");
  EXPECT_GT(signed_q.zero_point, 30);
  EXPECT_LT(signed_q.zero_point, 160);
  // Uniform values: nothing to clip.
  const auto uniform = observed(torch::rand({100000}) * 3, "mse");
  EXPECT_NEAR(uniform.scale * 255, 3, 0.1);
  // Zeros only (a dead channel's layer): a valid, tiny scale.
  const auto zeros = observed(torch::zeros({100}), "mse");
  EXPECT_GT(zeros.scale, 0);
  EXPECT_TRUE(std::isfinite(zeros.scale));
}

TEST(Int8, Uint8MaxPoolingEqualsFloatMaxPooling) {
  for (const int64_t size : {7, 8, 56}) {
    const auto x = torch::randint(0, 256, {2, 5, size, size + 1})
                       .to(torch::kByte)
                       .contiguous(torch::MemoryFormat::ChannelsLast);
    const auto expected = torch::max_pool2d(x.to(torch::kFloat), 3, 2, 1);
    const auto got = resnet::detail::max_pool_uint8(x);
    EXPECT_EQ(got.scalar_type(), torch::kByte);
    EXPECT_TRUE(torch::equal(got.to(torch::kFloat), expected)) << size;
  }
}

TEST(Int8, WithoutTheOperatorsQuantizingSaysWhatIsMissing) {
  if (resnet::int8_available()) {
    GTEST_SKIP() << "this LibTorch has oneDNN's int8 operators";
  }
  auto fused =
      trained_like("resnet20", resnet::ResNetOptions().num_classes(3), 16);
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::quantize(fused, torch::randn({2, 3, 16, 16}));
      }),
      "onednn::qconv2d_pointwise"));
}

struct Int8Case {
  std::string arch;
  resnet::ResNetOptions options;
  int64_t size;
};

class Int8Networks : public ::testing::TestWithParam<Int8Case> {};

// Each kind of block and shortcut: the basic block with a convolution
// shortcut and the ImageNet stem's pooling, the bottleneck, grouped
// convolutions, CIFAR's zero-padding shortcut.
INSTANTIATE_TEST_SUITE_P(
    Kinds,
    Int8Networks,
    ::testing::Values(
        Int8Case{"resnet18", resnet::ResNetOptions().num_classes(10), 64},
        Int8Case{"resnet26", resnet::ResNetOptions().num_classes(10), 64},
        Int8Case{
            "resnext50_32x4d",
            resnet::ResNetOptions().num_classes(10),
            32},
        Int8Case{
            "resnet20",
            resnet::ResNetOptions().num_classes(10).in_channels(1),
            28}),
    [](const auto& info) { return info.param.arch; });

TEST_P(Int8Networks, FollowTheFloatNetworkAndRefuseWhatTheyCannotRun) {
  if (!resnet::int8_available()) {
    GTEST_SKIP() << "int8 needs LibTorch 2.x (onednn::qconv2d_pointwise)";
  }
  const auto& c = GetParam();
  auto fused = trained_like(c.arch, c.options, c.size);
  const int64_t channels = c.options.in_channels();
  torch::manual_seed(3);
  const auto calibration = torch::randn({48, channels, c.size, c.size});
  const auto images = torch::randn({16, channels, c.size, c.size});
  torch::Tensor expected;
  {
    torch::InferenceMode guard;
    expected = fused->forward(images);
  }
  for (const auto* observer : {"mse", "percentile", "minmax"}) {
    const auto int8 = resnet::quantize(
        fused, calibration, resnet::QuantizeOptions().observer(observer));
    const auto got = int8(images);
    EXPECT_EQ(got.sizes(), expected.sizes());
    EXPECT_EQ(got.scalar_type(), torch::kFloat);
    // Random networks' logits are small and close together; a wrong scale
    // or zero point anywhere puts the error near 1.
    EXPECT_LT(relative_error(got, expected), 0.15) << observer;
    // The weights: int8, one scale per output channel.
    EXPECT_EQ(int8.stem.weight.scalar_type(), torch::kChar);
    EXPECT_EQ(int8.stem.weight_scale.size(0), int8.stem.weight.size(0));
  }
  const auto int8 = resnet::quantize(fused, calibration);
  EXPECT_TRUE(contains(
      error_of([&] {
        int8(torch::randn({1, channels + 1, c.size, c.size}));
      }),
      "expected input [N, C, H, W]"));
  EXPECT_TRUE(contains(
      error_of([&] {
        int8(torch::randn({1, channels, c.size, c.size}, torch::kDouble));
      }),
      "int8 inference takes float32 CPU images"));
}

TEST(Int8, QuantizeRefusesBadOptionsAndNoImages) {
  auto fused =
      trained_like("resnet20", resnet::ResNetOptions().num_classes(3), 16);
  const auto images = torch::randn({2, 3, 16, 16});
  if (!resnet::int8_available()) {
    GTEST_SKIP() << "int8 needs LibTorch 2.x (onednn::qconv2d_pointwise)";
  }
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::quantize(
            fused, images, resnet::QuantizeOptions().observer("max"));
      }),
      "observer is mse, percentile or minmax"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::quantize(
            fused, images, resnet::QuantizeOptions().percentile(30));
      }),
      "percentile must be in (50, 100]"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::quantize(fused, torch::randn({3, 16}));
      }),
      "calibration images [N, C, H, W]"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::quantize(fused, std::vector<torch::Tensor>{}); }),
      "needs calibration images"));
}
