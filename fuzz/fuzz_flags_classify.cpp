// The command-line parser of examples/classify.cpp, built from its own source
// with its main renamed.
#define main classify_main
#include "../examples/classify.cpp"
#undef main

#define RESNET_FUZZ_PARSE(argc, argv) \
  (void)resnet::parse_device(parse_args(argc, argv).device)
#include "fuzz_flags.h"
