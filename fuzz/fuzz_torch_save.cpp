// torch.save files from memory: the zip container (central directory,
// records, data.pkl, storages) and the legacy format; then the state dict
// is looked for as load_state_dict does.
#include "fuzz_support.h"

#include <resnet/io/checkpoint.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  resnet_fuzz::expect_clean_error([&] {
    const auto root = resnet::detail::read_torch_save_bytes(
        reinterpret_cast<const char*>(data), size);
    resnet::StateDict state;
    resnet::detail::find_state_dict(root, "", state);
    for (const auto& item : state) {
      (void)item.second.sum();
    }
  });
  return 0;
}
