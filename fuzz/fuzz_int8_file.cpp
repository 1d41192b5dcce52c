// An int8 network's file (safetensors whose metadata describes the
// network): every check load_quantized makes of the description and the
// tensors; where this LibTorch runs int8, the network it loads then runs on
// the smallest image it takes.
#include "fuzz_support.h"

#include <resnet/inference/quantized_file.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const resnet_fuzz::TempFile file(data, size);
  resnet_fuzz::expect_clean_error([&] {
    const auto net = resnet::load_quantized(file.path());
    if (net.total_stride <= 64) {
      (void)net(torch::randn({1, net.in_channels, 64, 64}));
    }
  });
  return 0;
}
