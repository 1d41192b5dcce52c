// Lists what a weight file holds: its format, every tensor with its dtype and
// shape, the other entries of a training checkpoint (epoch, arguments, ...),
// and the state dict resnet::load_state_dict would take from it.
//
//   inspect_checkpoint FILE [--all]
//
// Reads torch.save files (zip or legacy, also whole training checkpoints),
// safetensors and TorchScript archives; nothing in the file is executed.
//
// Build it alone against an installed resnet package:
//   find_package(resnet CONFIG REQUIRED)
//   add_executable(inspect_checkpoint inspect_checkpoint.cpp)
//   target_link_libraries(inspect_checkpoint PRIVATE resnet::resnet)

#include <resnet/io/checkpoint.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  std::string path;
  bool all = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--all") {
      all = true;
    } else if (arg == "-h" || arg == "--help") {
      std::cout << "usage: inspect_checkpoint FILE [--all]\n"
                   "  --all  list every entry (default: the first 40)\n";
      return 0;
    } else if (path.empty() && !arg.empty() && arg[0] != '-') {
      path = arg;
    } else {
      std::cerr << "inspect_checkpoint: unexpected argument '" << arg
                << "'\nusage: inspect_checkpoint FILE [--all]\n";
      return 2;
    }
  }
  if (path.empty()) {
    std::cerr << "usage: inspect_checkpoint FILE [--all]\n";
    return 2;
  }
  try {
    const auto info = resnet::inspect_checkpoint(path);
    std::cout << resnet::to_string(info, all ? 0 : 40);
    return info.state_error.empty() ? 0 : 1;
  } catch (const c10::Error& e) {
    std::cerr << "inspect_checkpoint: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "inspect_checkpoint: " << e.what() << "\n";
    return 1;
  }
}
