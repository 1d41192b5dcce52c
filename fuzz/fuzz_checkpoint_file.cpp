// The public entry points on a file of any content: format detection,
// inspect_checkpoint, read_state_dict, and load_state_dict into a small
// network (the mapped path), TorchScript archives included.
#include "fuzz_support.h"

#include <resnet/resnet.h>

namespace {

resnet::ResNet<resnet::BasicBlock<>>& model() {
  static auto net = resnet::resnet18(
      resnet::ResNetOptions().num_classes(10).base_channels(8).stem(
          resnet::Stem::Cifar));
  return net;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  resnet_fuzz::TempFile file(data, size);
  const auto& path = file.path();
  resnet_fuzz::expect_clean_error([&] {
    (void)resnet::detail::detect_format(path);
    const auto info = resnet::inspect_checkpoint(path);
    (void)resnet::to_string(info, 40);
    resnet_fuzz::expect_clean_error(
        [&] { (void)resnet::read_state_dict(path); });
    resnet_fuzz::expect_clean_error([&] {
      resnet::load_state_dict(
          model(), path, resnet::LoadOptions().strict(false));
    });
  });
  return 0;
}
