// safetensors from memory: the length prefix, the JSON header, offsets and
// dtypes; every tensor it yields is read in full.
#include "fuzz_support.h"

#include <resnet/io/safetensors.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  resnet_fuzz::expect_clean_error([&] {
    const auto file = resnet::detail::parse_safetensors(
        reinterpret_cast<const char*>(data), size);
    for (const auto& item : file.tensors) {
      (void)item.second.to(torch::kDouble).sum();
    }
  });
  return 0;
}
