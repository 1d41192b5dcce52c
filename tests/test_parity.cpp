// Numerical parity with torchvision: Python writes the references before
// the tests (tests/python/make_parity_references.py, a CTest fixture) and
// checks the checkpoints the tests write after them
// (tests/python/check_parity_roundtrips.py). A test binary of its own, so
// that the fixture's large files are written only when these tests run.

#include "test_support.h"

#include <filesystem>
#include <initializer_list>
#include <map>

namespace {

namespace fs = std::filesystem;
using resnet::LoadOptions;
using resnet::ResNetOptions;
using resnet_test::contains;
using resnet_test::error_of;
using resnet_test::relative_error;

std::map<std::string, torch::Tensor> read_map(const fs::path& path) {
  std::map<std::string, torch::Tensor> out;
  for (auto& item : resnet::read_state_dict(path.string())) {
    out.emplace(item.first, item.second);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Parity with torchvision: the CTest fixture make_parity_references
// (tests/python/make_parity_references.py, make_reference.py) writes random
// torchvision models (random batch-norm statistics too) as a dict and as
// TorchScript, with their outputs and gradients, one folder per case. No test
// runs Python itself.

// The fixture's folder for one case, e.g. "torchvision_resnet50".
fs::path parity_case(const std::string& name) {
  return fs::path(RESNET_FIXTURE_DIR) / "parity_references" / name;
}

// Whether the fixture wrote `files` into `dir`.
::testing::AssertionResult has_references(
    const fs::path& dir,
    std::initializer_list<const char*> files) {
  for (const char* file : files) {
    if (!fs::is_regular_file(dir / file)) {
      return ::testing::AssertionFailure()
          << "no " << (dir / file).string()
          << ": run through ctest: the fixture make_parity_references "
             "writes it";
    }
  }
  return ::testing::AssertionSuccess();
}

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, OutputsGradientsAndRoundTripMatchTorchvision) {
  const std::string arch = GetParam();
  const auto dir = parity_case("torchvision_" + arch);
  ASSERT_TRUE(has_references(dir, {"state.pt", "script.pt", "io.pt"}));
  // What an earlier run left must not stand in for this run's files.
  fs::remove(dir / "cpp.pt");
  fs::remove(dir / "cpp_io.pt");
  auto io = read_map(dir / "io.pt");
  const auto x = io.at("input");

  // (a) the dict and (b) the TorchScript archive, in eval mode.
  auto from_dict = resnet::create(arch);
  auto from_script = resnet::create(arch);
  resnet::load_state_dict(from_dict, (dir / "state.pt").string());
  resnet::load_state_dict(from_script, (dir / "script.pt").string());
  from_dict->eval();
  from_script->eval();
  torch::Tensor eval_out;
  {
    torch::NoGradGuard no_grad;
    eval_out = from_dict->forward(x);
    const double err_dict = relative_error(eval_out, io.at("eval_output"));
    const double err_script =
        relative_error(from_script->forward(x), io.at("eval_output"));
    std::cout << arch << " eval relative error: dict " << err_dict
              << ", script " << err_script << "\n";
    EXPECT_LE(err_dict, 1e-5);
    EXPECT_LE(err_script, 1e-5);
  }

  // Train mode: batch statistics, then gradients of the same loss.
  from_dict->train();
  const auto train_out = from_dict->forward(x);
  const double err_train =
      relative_error(train_out.detach(), io.at("train_output"));
  EXPECT_LE(err_train, 1e-5);
  (train_out * io.at("loss_weight")).sum().backward();
  double worst = 0;
  std::string worst_name;
  size_t compared = 0;
  for (const auto& p : from_dict->named_parameters()) {
    const auto it = io.find("grad." + p.key());
    ASSERT_NE(it, io.end()) << "no reference gradient for " << p.key();
    const double err = relative_error(p.value().grad(), it->second);
    if (err > worst) {
      worst = err;
      worst_name = p.key();
    }
    EXPECT_LE(err, 1e-4) << p.key();
    ++compared;
  }
  EXPECT_EQ(compared, from_dict->parameters().size());
  std::cout << arch << " train relative error " << err_train
            << "; worst gradient " << worst << " (" << worst_name << ") of "
            << compared << "\n";

  // (c) C++ -> Python: after the tests, check_parity_roundtrips.py (the
  // fixture's cleanup) loads these into torchvision strictly and compares
  // the outputs; it fails for an architecture without them.
  resnet::save_state_dict(from_script, (dir / "cpp.pt").string());
  resnet::save_state_dict(
      resnet::StateDict{{"input", x}, {"output", eval_out}},
      (dir / "cpp_io.pt").string());
}

INSTANTIATE_TEST_SUITE_P(
    Torchvision,
    Parity,
    ::testing::Values(
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2"),
    [](const auto& param) { return param.param; });

class KuangliuParity : public ::testing::TestWithParam<std::string> {};

TEST_P(KuangliuParity, CifarCheckpointsLoadThroughKeyMap) {
  const std::string arch = GetParam();
  const auto dir = parity_case("kuangliu_" + arch);
  ASSERT_TRUE(has_references(dir, {"state.pt", "io.pt"}));
  auto model = resnet::create(
      arch, ResNetOptions().num_classes(10).stem(resnet::Stem::Cifar));
  const auto path = (dir / "state.pt").string();
  // The keys differ: without the mapping the load is refused.
  EXPECT_TRUE(contains(
      error_of([&] { resnet::load_state_dict(model, path); }),
      "layer2.0.shortcut.0.weight"));
  resnet::load_state_dict(
      model, path, LoadOptions().key_map(resnet::kuangliu_cifar_key));
  model->eval();
  torch::NoGradGuard no_grad;
  const auto io = read_map(dir / "io.pt");
  const double err =
      relative_error(model->forward(io.at("input")), io.at("eval_output"));
  std::cout << arch << " (kuangliu) relative error " << err << "\n";
  EXPECT_LE(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    CifarStyle,
    KuangliuParity,
    ::testing::Values(
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152"),
    [](const auto& param) { return param.param; });

} // namespace
