// The command-line parser of examples/benchmark/benchmark.cpp, built from its
// own source with its main renamed.
#define main benchmark_main
#include "../examples/benchmark/benchmark.cpp"
#undef main

#define RESNET_FUZZ_PARSE(argc, argv) \
  (void)resnet::parse_device(parse_args(argc, argv).device)
#include "fuzz_flags.h"
