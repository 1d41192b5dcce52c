#pragma once

// The public API of the resnet library. Decoding image files is in
// <resnet/image.h>, which needs libpng and libjpeg-turbo, and
// <resnet/data/*.h>, which need zlib.

#include <resnet/blocks.h>
#include <resnet/checkpoint.h>
#include <resnet/cuda_graph.h>
#include <resnet/device.h>
#include <resnet/inference.h>
#include <resnet/memory.h>
#include <resnet/models.h>
#include <resnet/network.h>
#include <resnet/norm.h>
#include <resnet/optim.h>
#include <resnet/options.h>
#include <resnet/precision.h>
#include <resnet/safetensors.h>
#include <resnet/transforms.h>
#include <resnet/version.h>
#include <resnet/weights.h>
