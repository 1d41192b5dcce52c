// The pickle interpreter on raw bytes: parse, then walk and print the tree
// as the checkpoint tools do.
#include "fuzz_support.h"

#include <resnet/io/checkpoint.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  resnet_fuzz::expect_clean_error([&] {
    const auto root =
        resnet::detail::unpickle(reinterpret_cast<const char*>(data), size);
    (void)root.repr(4096);
    resnet::StateDict state;
    resnet_fuzz::expect_clean_error(
        [&] { resnet::detail::find_state_dict(root, "", state); });
  });
  return 0;
}
