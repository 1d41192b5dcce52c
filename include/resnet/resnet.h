#pragma once

// The whole public API of the resnet library.

#include <resnet/blocks.h>
#include <resnet/device.h>
#include <resnet/models.h>
#include <resnet/network.h>
#include <resnet/norm.h>
#include <resnet/options.h>
#include <resnet/version.h>
