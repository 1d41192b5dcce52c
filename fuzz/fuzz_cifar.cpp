// CIFAR-10 and CIFAR-100 binary records, gzipped or not.
#include "fuzz_support.h"

#include <resnet/data/cifar.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (auto kind : {resnet::data::Cifar::Ten, resnet::data::Cifar::Hundred}) {
    resnet_fuzz::expect_clean_error([&] {
      const auto bytes =
          resnet::data::maybe_gunzip(data, size, "fuzz", size_t{64} << 20);
      const auto set =
          resnet::data::decode_cifar(bytes.data(), bytes.size(), kind);
      (void)set.images.sum();
      (void)set.targets.sum();
    });
  }
  return 0;
}
