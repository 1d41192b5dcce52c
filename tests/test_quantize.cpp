// Int8 inference: the observers that choose activation ranges, the uint8
// pooling, and quantized networks against the float32 ones they came from.

#include "test_support.h"

#include <resnet/cpu_features.h>
#include <resnet/inference/quantize.h>
#include <resnet/inference/quantized_file.h>
#include <resnet/io/safetensors.h>

#include <resnet/resnet.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <iostream>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_quantize {

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

// A small int8 network made by hand (a stem and one basic block), so that
// its file can be written where LibTorch cannot quantize.
resnet::Int8ResNet tiny_int8() {
  torch::manual_seed(5);
  const auto conv = [](int64_t in, int64_t out) {
    resnet::Int8Conv c;
    c.weight = torch::randint(-127, 128, {out, in, 3, 3}).to(torch::kChar);
    c.weight_scale = torch::rand({out}) * 0.01 + 0.001;
    c.bias = torch::randn({out}) * 0.1;
    c.geometry = {{1, 1}, {1, 1}, {1, 1}, 1};
    c.input = {0.02, 0};
    c.output = {0.03, 0};
    return c;
  };
  resnet::Int8ResNet net;
  net.in_channels = 3;
  net.input = {0.02, 128};
  net.stem = conv(3, 8);
  resnet::Int8ResNet::Block block;
  block.convs = {conv(8, 8), conv(8, 8)};
  net.stages = {{block}};
  net.fc_weight = torch::randn({4, 8});
  net.fc_bias = torch::randn({4});
  return net;
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
    [](const auto& test) { return test.param.arch; });

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
  // Saved and loaded: the same network, without calibrating again.
  const auto path =
      (resnet_test::work_dir("quantize/networks") / (c.arch + ".safetensors"))
          .string();
  resnet::save_quantized(int8, path);
  EXPECT_TRUE(torch::equal(resnet::load_quantized(path)(images), int8(images)));
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

TEST(Int8, SavedNetworksLoadAndDamagedOnesAreRefused) {
  const auto dir = resnet_test::work_dir("quantize/files");
  const auto path = (dir / "tiny.safetensors").string();
  resnet::save_quantized(tiny_int8(), path);
  const auto saved = resnet::read_safetensors(path);
  auto description = nlohmann::json::parse(saved.metadata.at("resnet.int8"));
  EXPECT_EQ(description["stages"][0][0]["convs"], 2);
  if (resnet::int8_available()) {
    const auto back = resnet::load_quantized(path);
    const auto x = torch::randn({2, 3, 8, 8});
    EXPECT_TRUE(torch::equal(back(x), back(x)));
    EXPECT_EQ(back(x).sizes(), torch::IntArrayRef({2, 4}));
    EXPECT_TRUE(torch::equal(back.stem.weight, tiny_int8().stem.weight));
    EXPECT_EQ(back.stages[0][0].convs[1].output.scale, 0.03);
  } else {
    EXPECT_TRUE(contains(
        error_of([&] { resnet::load_quantized(path); }),
        "onednn::qconv2d_pointwise"));
  }
  // Each damage: the description, or a tensor, changed; the error names it.
  const auto damaged = [&](auto change) {
    resnet::StateDict tensors;
    for (const auto& [name, t] : saved.tensors) {
      tensors.emplace_back(name, t.clone());
    }
    auto meta = saved.metadata;
    auto j = nlohmann::json::parse(meta.at("resnet.int8"));
    change(j, tensors);
    meta["resnet.int8"] = j.dump();
    const auto bad = (dir / "bad.safetensors").string();
    resnet::save_safetensors(tensors, bad, meta);
    return error_of([&] { resnet::load_quantized(bad); });
  };
  using Tensors = resnet::StateDict;
  const auto tensor = [](Tensors& t,
                         const std::string& name) -> torch::Tensor& {
    for (auto& [n, v] : t) {
      if (n == name) {
        return v;
      }
    }
    throw std::runtime_error("no " + name);
  };
  const std::vector<std::pair<std::string, std::string>> expected_errors = {
      {"version", "is not version 1"},
      {"scale", "scale > 0"},
      {"zero point", "zero point in [0, 255]"},
      {"stride", "conv1 stride must be in [1, 8]"},
      {"groups", "with groups 3"},
      {"convs", "is not {convs: 1 to 8"},
      {"shape",
       "conv2.weight' is [8, 4, 3, 3] with groups 1 for an input of 8"},
      {"nan", "bias must be finite"},
      {"extra", "'spare' that no part of the network takes"},
      {"missing", "there is no tensor 'fc.bias'"},
      {"dtype", "'conv1.weight_scale' is Double"},
      {"json", "is not version 1 JSON"},
  };
  for (const auto& [what, message] : expected_errors) {
    const auto error = damaged([&](nlohmann::json& j, Tensors& t) {
      if (what == "version") {
        j["version"] = 2;
      } else if (what == "scale") {
        j["convs"]["layer1.0.conv1"]["input"] = {-1.0, 0};
      } else if (what == "zero point") {
        j["input"] = {0.1, 300};
      } else if (what == "stride") {
        j["convs"]["conv1"]["stride"] = {0, 1};
      } else if (what == "groups") {
        j["convs"]["conv1"]["groups"] = 3;
      } else if (what == "convs") {
        j["stages"][0][0]["convs"] = 100;
      } else if (what == "shape") {
        tensor(t, "layer1.0.conv2.weight") =
            torch::zeros({8, 4, 3, 3}, torch::kChar);
      } else if (what == "nan") {
        tensor(t, "conv1.bias")[0] = std::nan("");
      } else if (what == "extra") {
        t.emplace_back("spare", torch::zeros({1}));
      } else if (what == "missing") {
        for (auto it = t.begin(); it != t.end(); ++it) {
          if (it->first == "fc.bias") {
            t.erase(it);
            break;
          }
        }
      } else if (what == "dtype") {
        tensor(t, "conv1.weight_scale") =
            tensor(t, "conv1.weight_scale").to(torch::kDouble);
      } else if (what == "json") {
        j = "not an object";
      }
    });
    EXPECT_TRUE(contains(error, message)) << what << ": " << error;
    EXPECT_TRUE(contains(error, "bad.safetensors")) << what;
  }
  // Damage that every check of the file lets through but that cannot run:
  // the block's two paths no longer meet, or a convolution leaves nothing.
  const std::vector<std::pair<std::string, std::string>> run_errors = {
      {"stride", "the block's two paths do not meet"},
      {"padding", "the block's two paths do not meet"},
      {"dilation", "leaves nothing of an input of [2, 8, 8, 8]"},
  };
  for (const auto& [what, message] : run_errors) {
    const auto error = damaged([&, what = what](nlohmann::json& j, Tensors&) {
      auto& conv = j["convs"]["layer1.0.conv1"];
      if (what == "stride") {
        conv["stride"] = {2, 2};
      } else if (what == "padding") {
        conv["padding"] = {0, 0};
      } else {
        conv["dilation"] = {8, 8};
      }
    });
    if (!resnet::int8_available()) {
      EXPECT_TRUE(contains(error, "onednn::qconv2d_pointwise")) << error;
      continue;
    }
    EXPECT_EQ(error, "") << what;
    const auto net = resnet::load_quantized((dir / "bad.safetensors").string());
    EXPECT_TRUE(contains(
        error_of([&] {
          net(torch::randn({2, 3, 8, 8}));
        }),
        message))
        << what;
  }
  // Not an int8 network at all.
  const auto plain = (dir / "plain.safetensors").string();
  resnet::save_safetensors({{"w", torch::zeros({2})}}, plain);
  EXPECT_TRUE(contains(
      error_of([&] { resnet::load_quantized(plain); }),
      "it is not an int8 network"));
}

TEST(CpuFeatures, AgreeWithTheKernelsFlags) {
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = line.substr(line.find(':') + 1) + " ";
      break;
    }
  }
  if (flags.empty()) {
    GTEST_SKIP() << "no x86 flags in /proc/cpuinfo";
  }
  const auto has = [&flags](const char* flag) {
    return flags.find(" " + std::string(flag) + " ") != std::string::npos;
  };
  const auto f = resnet::cpu_features();
  EXPECT_EQ(f.avx2, has("avx2") && has("fma"));
  EXPECT_EQ(
      f.avx512,
      has("avx512f") && has("avx512dq") && has("avx512bw") && has("avx512vl"));
  EXPECT_EQ(f.avx512_vnni, has("avx512_vnni"));
  EXPECT_EQ(f.avx_vnni, has("avx_vnni"));
  EXPECT_EQ(f.avx512_bf16, has("avx512_bf16"));
  EXPECT_EQ(f.amx_bf16, has("amx_bf16") && has("amx_tile"));
  EXPECT_EQ(f.amx_int8, has("amx_int8") && has("amx_tile"));
  std::cout << "this CPU: " << f.to_string() << "\n";
  EXPECT_TRUE(contains(f.to_string(), f.avx2 ? "avx2" : ""));
}

TEST(CpuPrecision, FitFollowsTheInstructionSetsAndTheOperators) {
  using resnet::Precision;
  EXPECT_EQ(resnet::parse_precision("bf16"), Precision::BFloat16);
  for (auto p : {Precision::Float32, Precision::BFloat16, Precision::Int8}) {
    EXPECT_EQ(resnet::parse_precision(resnet::to_string(p)), p);
  }
  EXPECT_TRUE(contains(
      error_of([] { resnet::parse_precision("fp8"); }),
      "unknown precision 'fp8' (fp32, bf16 or int8)"));

  resnet::CpuFeatures avx2;
  avx2.avx2 = true;
  auto vnni = avx2;
  vnni.avx512 = vnni.avx512_vnni = true;
  auto amx = vnni;
  amx.avx512_bf16 = amx.amx_bf16 = amx.amx_int8 = true;
  auto avx512_bf16 = vnni; // bf16 dot products, no tiles
  avx512_bf16.avx512_bf16 = true;

  EXPECT_TRUE(resnet::cpu_precision_fit(Precision::Float32, avx2).faster);
  for (const auto& f : {avx2, vnni}) {
    const auto fit = resnet::cpu_precision_fit(Precision::BFloat16, f);
    EXPECT_FALSE(fit.faster);
    EXPECT_TRUE(contains(fit.reason, "no AMX-BF16 or AVX512-BF16"));
  }
  EXPECT_TRUE(resnet::cpu_precision_fit(Precision::BFloat16, amx).faster);
  EXPECT_TRUE(
      resnet::cpu_precision_fit(Precision::BFloat16, avx512_bf16).faster);
  const auto plain = resnet::cpu_precision_fit(Precision::Int8, avx2);
  EXPECT_FALSE(plain.faster);
  const bool ops = resnet::int8_available();
  EXPECT_TRUE(
      contains(plain.reason, ops ? "no VNNI" : "onednn::qconv2d_pointwise"));
  EXPECT_EQ(resnet::cpu_precision_fit(Precision::Int8, vnni).faster, ops);
  EXPECT_EQ(resnet::cpu_precision_fit(Precision::Int8, amx).faster, ops);

  // The default choice is never one that is slower than float32.
  EXPECT_EQ(resnet::fastest_cpu_precision(true, avx2), Precision::Float32);
  EXPECT_EQ(resnet::fastest_cpu_precision(false, vnni), Precision::Float32);
  EXPECT_EQ(
      resnet::fastest_cpu_precision(true, vnni),
      ops ? Precision::Int8 : Precision::Float32);
  EXPECT_EQ(resnet::fastest_cpu_precision(false, amx), Precision::BFloat16);
  EXPECT_EQ(
      resnet::fastest_cpu_precision(false, avx512_bf16), Precision::BFloat16);
  EXPECT_EQ(
      resnet::fastest_cpu_precision(true, avx512_bf16),
      ops ? Precision::Int8 : Precision::BFloat16);
  EXPECT_EQ(
      resnet::fastest_cpu_precision(true, amx),
      ops ? Precision::Int8 : Precision::BFloat16);
}

// A trained-like fused ResNet-18 with 10 classes, four 64x64 images and
// its float32 logits for them.
struct PrecisionReference {
  resnet::InferenceResNet fused;
  torch::Tensor images, expected;
};

PrecisionReference precision_reference() {
  PrecisionReference r{
      trained_like("resnet18", resnet::ResNetOptions().num_classes(10), 64)};
  torch::manual_seed(5);
  r.images = torch::randn({4, 3, 64, 64});
  torch::InferenceMode guard;
  r.expected = r.fused->forward(r.images);
  return r;
}

TEST(CpuPrecision, EachPrecisionFollowsFloat32BehindOneCall) {
  using resnet::Precision;
  auto reference = precision_reference();
  auto& fused = reference.fused;
  const auto& images = reference.images;
  const auto& expected = reference.expected;
  resnet::CpuInference fp32(fused, Precision::Float32);
  EXPECT_EQ(fp32.precision(), Precision::Float32);
  EXPECT_TRUE(torch::allclose(fp32(images), expected, 1e-5, 1e-5));

  // bfloat16: oneDNN's fused bf16 convolutions where LibTorch has them,
  // within what 8 significant bits allow over 18 layers; float32 out.
  auto copy =
      trained_like("resnet18", resnet::ResNetOptions().num_classes(10), 64);
  resnet::CpuInference bf16(copy, Precision::BFloat16);
  EXPECT_EQ(copy->conv1->weight.scalar_type(), torch::kBFloat16);
  const auto got = bf16(images);
  EXPECT_EQ(got.scalar_type(), torch::kFloat);
  const double bf16_error = relative_error(got, expected);
  std::cout << "bfloat16 relative error " << bf16_error << "\n";
  EXPECT_LT(bf16_error, 64 * std::ldexp(1.0, -8));
  EXPECT_TRUE(contains(
      error_of([&] { bf16(images.to(torch::kDouble)); }),
      "CpuInference takes float32 CPU images"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::CpuInference(fused, Precision::Int8); }),
      "an int8 network comes from resnet::quantize"));
  // What cannot be fused runs as it is (classify casts it for bf16).
  EXPECT_TRUE(resnet::fusable(*resnet::create("resnet18")));
  EXPECT_FALSE(resnet::fusable(*resnet::create("resnet26d"))); // deep stem
}

TEST(CpuPrecision, Int8FollowsFloat32BehindOneCall) {
  using resnet::Precision;
  if (!resnet::int8_available()) {
    GTEST_SKIP() << "int8 needs LibTorch 2.x (onednn::qconv2d_pointwise)";
  }
  auto reference = precision_reference();
  auto& fused = reference.fused;
  const auto& images = reference.images;
  const auto& expected = reference.expected;
  auto net = resnet::quantize(fused, torch::randn({16, 3, 64, 64}));
  const auto int8_out = net(images);
  resnet::CpuInference int8(std::move(net));
  EXPECT_EQ(int8.precision(), Precision::Int8);
  EXPECT_TRUE(torch::equal(int8(images), int8_out));
  EXPECT_LT(relative_error(int8_out, expected), 0.15);

  // What save_quantized writes is told from other safetensors files by its
  // header alone.
  const auto dir = resnet_test::work_dir("quantize/precision");
  resnet::save_quantized(
      resnet::quantize(fused, images), (dir / "int8.st").string());
  resnet::save_safetensors(
      {{"w", torch::ones({2})}}, (dir / "plain.st").string());
  EXPECT_TRUE(resnet::is_quantized_file((dir / "int8.st").string()));
  EXPECT_FALSE(resnet::is_quantized_file((dir / "plain.st").string()));
  EXPECT_FALSE(resnet::is_quantized_file((dir / "missing.st").string()));
}

} // namespace test_quantize
