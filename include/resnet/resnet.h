#pragma once

// The library for running ResNets: the networks (<resnet/model.h>), their
// weight files (<resnet/io.h>) and fast inference (<resnet/inference.h>).
// Training is in <resnet/train.h>, datasets and image decoding in
// <resnet/data.h>; each folder under resnet/ is one layer, and its headers
// can be included alone.

#include <resnet/config.h>
#include <resnet/cpu_features.h>
#include <resnet/device.h>
#include <resnet/inference.h>
#include <resnet/io.h>
#include <resnet/model.h>
#include <resnet/version.h>
