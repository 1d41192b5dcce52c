#pragma once

// The networks: options, normalization layers, attention, the two residual
// blocks, `ResNet<Block>` and the architecture table with its factories.
// Depends on LibTorch only.

#include <resnet/model/attention.h>
#include <resnet/model/blocks.h>
#include <resnet/model/config.h>
#include <resnet/model/functional.h>
#include <resnet/model/models.h>
#include <resnet/model/network.h>
#include <resnet/model/norm.h>
#include <resnet/model/options.h>
