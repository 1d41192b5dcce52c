// The command-line parser of examples/benchmark/load_speed.cpp, built from its
// own source with its main renamed.
#define main load_speed_main
#include "../examples/benchmark/load_speed.cpp"
#undef main

#define RESNET_FUZZ_PARSE(argc, argv) (void)parse_args(argc, argv)
#include "fuzz_flags.h"
