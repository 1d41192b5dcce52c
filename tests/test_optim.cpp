// ForeachSGD and ForeachAdamW (include/resnet/train/optim.h) against the
// optimizers they replace, torch::optim::SGD and torch::optim::AdamW: the
// same parameters after every step, and checkpoints that load into either.

#include "test_support.h"

#include <resnet/train/optim.h>

#include <torch/serialize.h>
#include <torch/torch.h>

#include <sstream>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_optim {

namespace {

using torch::optim::AdamW;
using torch::optim::AdamWOptions;
using torch::optim::SGD;
using torch::optim::SGDOptions;

// Parameters of several shapes and layouts; the last never gets a gradient.
std::vector<torch::Tensor> make_params(torch::Device device) {
  torch::manual_seed(1);
  std::vector<torch::Tensor> ps = {
      torch::randn({4, 3}),
      torch::randn({4}),
      torch::randn({2, 3, 3, 3}).contiguous(torch::MemoryFormat::ChannelsLast),
      torch::randn({5})};
  for (auto& p : ps) {
    p = p.to(device).requires_grad_();
  }
  return ps;
}

// The gradients of step k, the same for every copy of the parameters.
void set_grads(std::vector<torch::Tensor>& ps, int k) {
  torch::manual_seed(100 + k);
  for (size_t i = 0; i + 1 < ps.size(); ++i) {
    ps[i].mutable_grad() = torch::randn_like(ps[i]);
  }
}

void expect_close(
    const std::vector<torch::Tensor>& a,
    const std::vector<torch::Tensor>& b,
    const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-6, 1e-7))
        << what << ", parameter " << i << ": largest difference "
        << (a[i] - b[i]).abs().max().item<double>();
  }
}

// `steps` steps of Reference and Fast from the same start and gradients.
template <class Reference, class Fast, class Options>
void expect_same_steps(
    const Options& options,
    const std::string& what,
    torch::Device device = torch::kCPU,
    int steps = 6) {
  auto a = make_params(device);
  auto b = make_params(device);
  const auto untouched = a.back().detach().clone();
  Reference reference(a, options);
  Fast fast(b, options);
  for (int k = 0; k < steps; ++k) {
    set_grads(a, k);
    set_grads(b, k);
    reference.step();
    fast.step();
    expect_close(a, b, what + ", step " + std::to_string(k + 1));
  }
  EXPECT_TRUE(torch::equal(b.back(), untouched)) << what;
  EXPECT_FALSE(torch::equal(b.front(), make_params(device).front())) << what;
}

// Steps with `First`, a checkpoint, then `Second` loads it and both go on:
// the same parameters as `Second` alone all along.
template <class First, class Second, class Options>
void expect_checkpoints_interchange(
    const Options& options,
    const std::string& what) {
  auto a = make_params(torch::kCPU);
  auto b = make_params(torch::kCPU);
  First first(a, options);
  Second alone(b, options);
  for (int k = 0; k < 3; ++k) {
    set_grads(a, k);
    set_grads(b, k);
    first.step();
    alone.step();
  }
  std::stringstream file;
  torch::save(first, file);
  auto c = make_params(torch::kCPU);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < c.size(); ++i) {
      c[i].copy_(a[i]);
    }
  }
  Second second(c, options);
  torch::load(second, file);
  for (int k = 3; k < 6; ++k) {
    set_grads(c, k);
    set_grads(b, k);
    second.step();
    alone.step();
    expect_close(b, c, what + ", step " + std::to_string(k + 1));
  }
}

} // namespace

TEST(ForeachSGD, StepsEqualSGD) {
  expect_same_steps<SGD, resnet::ForeachSGD>(SGDOptions(0.1), "plain");
  expect_same_steps<SGD, resnet::ForeachSGD>(
      SGDOptions(0.1).momentum(0.9), "momentum");
  expect_same_steps<SGD, resnet::ForeachSGD>(
      SGDOptions(0.05).momentum(0.8).dampening(0.3).weight_decay(1e-2),
      "dampening and weight decay");
  expect_same_steps<SGD, resnet::ForeachSGD>(
      SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4),
      "Nesterov and weight decay");
}

TEST(ForeachSGD, GroupsKeepTheirOwnOptions) {
  auto a = make_params(torch::kCPU);
  auto b = make_params(torch::kCPU);
  const auto groups = [](std::vector<torch::Tensor>& p) {
    return std::vector<torch::optim::OptimizerParamGroup>{
        {{p[0], p[1]},
         std::make_unique<SGDOptions>(SGDOptions(0.1).momentum(0.9))},
        {{p[2], p[3]},
         std::make_unique<SGDOptions>(SGDOptions(0.01).weight_decay(0.1))}};
  };
  SGD reference(groups(a), SGDOptions(1));
  resnet::ForeachSGD fast(groups(b), SGDOptions(1));
  for (int k = 0; k < 4; ++k) {
    set_grads(a, k);
    set_grads(b, k);
    reference.step();
    fast.step();
    expect_close(a, b, "two groups, step " + std::to_string(k + 1));
  }
}

// Rates read from tensors (for a captured step) follow the options, per
// group, as a schedule changes them.
TEST(ForeachSGD, LearningRatesFromTensorsFollowTheSchedule) {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) {
    devices.emplace_back(torch::Device(torch::kCUDA, 0));
  }
  for (const auto& device : devices) {
    auto a = make_params(device);
    auto b = make_params(device);
    const auto groups = [](std::vector<torch::Tensor>& p) {
      const auto o = SGDOptions(0.1).momentum(0.9).nesterov(true);
      auto decayed = o;
      decayed.weight_decay(1e-2);
      return std::vector<torch::optim::OptimizerParamGroup>{
          {{p[0], p[1]}, std::make_unique<SGDOptions>(decayed)},
          {{p[2], p[3]}, std::make_unique<SGDOptions>(o)}};
    };
    SGD reference(groups(a), SGDOptions(1));
    resnet::ForeachSGD fast(groups(b), SGDOptions(1));
    EXPECT_TRUE(fast.learning_rate_tensors().empty());
    fast.read_learning_rates_from_tensors();
    const auto& rates = fast.learning_rate_tensors();
    ASSERT_EQ(rates.size(), 2u);
    EXPECT_EQ(rates[0].device(), device);
    EXPECT_FLOAT_EQ(rates[1].item<float>(), 0.1F);
    for (int k = 0; k < 5; ++k) {
      const double lr = 0.2 / (k + 1);
      for (torch::optim::Optimizer* o :
           {(torch::optim::Optimizer*)&reference,
            (torch::optim::Optimizer*)&fast}) {
        auto& g = o->param_groups();
        static_cast<SGDOptions&>(g[0].options()).lr(lr);
        static_cast<SGDOptions&>(g[1].options()).lr(lr / 10);
      }
      set_grads(a, k);
      set_grads(b, k);
      reference.step();
      fast.step();
      expect_close(
          a, b, device.str() + ", schedule, step " + std::to_string(k + 1));
      EXPECT_FLOAT_EQ(rates[0].item<float>(), static_cast<float>(lr));
      EXPECT_FLOAT_EQ(rates[1].item<float>(), static_cast<float>(lr / 10));
    }
  }
}

// Switched back, steps take the rates as numbers again: the same steps, bit
// for bit, as a ForeachSGD that never read tensors. The tensors stay (a
// captured step reads them) and change only when copied to.
TEST(ForeachSGD, RatesAsNumbersAgainAfterTensors) {
  auto a = make_params(torch::kCPU);
  auto b = make_params(torch::kCPU);
  const auto o = SGDOptions(0.1).momentum(0.9).nesterov(true);
  resnet::ForeachSGD plain(a, o);
  resnet::ForeachSGD switched(b, o);
  EXPECT_FALSE(switched.reads_learning_rates_from_tensors());
  switched.read_learning_rates_from_tensors();
  EXPECT_TRUE(switched.reads_learning_rates_from_tensors());
  switched.read_learning_rates_from_tensors(false);
  EXPECT_FALSE(switched.reads_learning_rates_from_tensors());
  ASSERT_EQ(switched.learning_rate_tensors().size(), 1u);
  const auto rate = switched.learning_rate_tensors()[0];
  for (int k = 0; k < 4; ++k) {
    for (resnet::ForeachSGD* sgd : {&plain, &switched}) {
      static_cast<SGDOptions&>(sgd->param_groups()[0].options())
          .lr(0.1 / (k + 1));
    }
    set_grads(a, k);
    set_grads(b, k);
    plain.step();
    switched.step();
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(a[i], b[i]))
          << "step " << k + 1 << ", parameter " << i;
    }
  }
  EXPECT_FLOAT_EQ(rate.item<float>(), 0.1F);
  switched.copy_learning_rates_to_tensors();
  EXPECT_FLOAT_EQ(rate.item<float>(), 0.025F);
  // On again, it is the same tensor, which a captured step may hold.
  switched.read_learning_rates_from_tensors();
  EXPECT_TRUE(switched.learning_rate_tensors()[0].is_same(rate));
}

TEST(ForeachSGD, CheckpointsInterchangeWithSGD) {
  const auto o = SGDOptions(0.1).momentum(0.9).nesterov(true);
  expect_checkpoints_interchange<resnet::ForeachSGD, SGD>(o, "saved, SGD");
  expect_checkpoints_interchange<SGD, resnet::ForeachSGD>(o, "SGD, saved");
}

TEST(ForeachAdamW, StepsEqualAdamW) {
  expect_same_steps<AdamW, resnet::ForeachAdamW>(
      AdamWOptions(1e-2), "default decay");
  expect_same_steps<AdamW, resnet::ForeachAdamW>(
      AdamWOptions(1e-2).weight_decay(0), "no decay");
  expect_same_steps<AdamW, resnet::ForeachAdamW>(
      AdamWOptions(3e-3).betas({0.8, 0.99}).eps(1e-6).weight_decay(0.05),
      "betas, eps");
  expect_same_steps<AdamW, resnet::ForeachAdamW>(
      AdamWOptions(1e-2).amsgrad(true), "AMSGrad");
}

TEST(ForeachAdamW, CheckpointsInterchangeWithAdamW) {
  const auto o = AdamWOptions(1e-2).amsgrad(true);
  expect_checkpoints_interchange<resnet::ForeachAdamW, AdamW>(o, "saved");
  expect_checkpoints_interchange<AdamW, resnet::ForeachAdamW>(o, "loaded");
}

TEST(ForeachOptimizers, SameStepsOnCuda) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  const torch::Device cuda(torch::kCUDA, 0);
  expect_same_steps<SGD, resnet::ForeachSGD>(
      SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4),
      "SGD on CUDA",
      cuda);
  expect_same_steps<AdamW, resnet::ForeachAdamW>(
      AdamWOptions(1e-2).amsgrad(true), "AdamW on CUDA", cuda);
}

TEST(ForeachOptimizers, ClosureAndSparseGradients) {
  auto p = make_params(torch::kCPU);
  resnet::ForeachSGD sgd(p, SGDOptions(0.1));
  const auto loss = sgd.step([&] {
    sgd.zero_grad();
    auto l = p[0].sum();
    l.backward();
    return l;
  });
  EXPECT_TRUE(loss.defined());
  EXPECT_TRUE(
      torch::allclose(p[0], make_params(torch::kCPU)[0] - 0.1, 1e-6, 1e-7));
  auto sparse = torch::zeros({3}, torch::kFloat).requires_grad_();
  sparse.mutable_grad() =
      torch::sparse_coo_tensor(torch::tensor({{1}}), torch::tensor({1.f}), {3});
  resnet::ForeachAdamW adamw({sparse}, AdamWOptions(0.1));
  EXPECT_TRUE(resnet_test::contains(
      resnet_test::error_of([&] { adamw.step(); }),
      "resnet: ForeachAdamW does not support sparse gradients"));
}

} // namespace test_optim
