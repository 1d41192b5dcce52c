#pragma once

// Weight files: reading torch.save files, safetensors and TorchScript
// archives without running anything in them, loading them into a model, and
// writing files Python reads.

#include <resnet/io/checkpoint.h>
#include <resnet/io/files.h>
#include <resnet/io/model_config.h>
#include <resnet/io/safetensors.h>
#include <resnet/io/state_dict.h>
#include <resnet/io/weights.h>
