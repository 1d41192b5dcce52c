// IDX arrays (MNIST's format), gzipped or not.
#include "fuzz_support.h"

#include <resnet/data/idx.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  resnet_fuzz::expect_clean_error([&] {
    const auto bytes =
        resnet::data::maybe_gunzip(data, size, "fuzz", size_t{64} << 20);
    const auto t = resnet::data::decode_idx(bytes.data(), bytes.size());
    (void)t.to(torch::kDouble).sum();
  });
  return 0;
}
