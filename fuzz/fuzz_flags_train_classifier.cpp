// The command-line parser of examples/train_classifier.cpp, built from its own
// source with its main renamed.
#define main train_classifier_main
#include "../examples/train_classifier.cpp"
#undef main

#define RESNET_FUZZ_PARSE(argc, argv) (void)parse_args(argc, argv)
#include "fuzz_flags.h"
