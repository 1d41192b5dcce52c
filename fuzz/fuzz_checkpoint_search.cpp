// The walks of <resnet/io/checkpoint.h> over a hostile pickle: the state-dict
// search (by default and by entry), the module flattening and the listing
// of inspect_checkpoint. Every persistent id resolves to one small storage,
// so that the pickle's own tensor-rebuilding calls put tensors in the tree
// where it likes.
#include "fuzz_support.h"

#include <resnet/io/checkpoint.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace resnet::detail;
  resnet_fuzz::expect_clean_error([&] {
    ReadBudget budget(size);
    const auto storage = owned_storage(64);
    auto load = [&](Unpickler& u, const PyValue&) {
      return u.make_storage({storage, c10::kFloat, 0, 64});
    };
    const auto root = Unpickler(
                          reinterpret_cast<const char*>(data),
                          size,
                          load,
                          torch_call,
                          {},
                          &budget)
                          .parse();
    resnet::StateDict state;
    resnet_fuzz::expect_clean_error(
        [&] { find_state_dict(root, "", state, budget); });
    resnet_fuzz::expect_clean_error(
        [&] { find_state_dict(root, "model/state_dict", state, budget); });
    std::vector<resnet::CheckpointEntry> entries;
    resnet_fuzz::expect_clean_error(
        [&] { EntryLister(entries, budget).list(root, ""); });
  });
  return 0;
}
