#pragma once

// Data: datasets (IDX, CIFAR, image folders), a multi-threaded loader,
// batched augmentation, image decoding (libpng, libjpeg-turbo) and
// torchvision's preprocessing. Needs zlib, libpng and libjpeg-turbo.

#include <resnet/data/augment.h>
#include <resnet/data/cifar.h>
#include <resnet/data/cifar_dataset.h>
#include <resnet/data/datasets.h>
#include <resnet/data/gzip.h>
#include <resnet/data/idx.h>
#include <resnet/data/idx_dataset.h>
#include <resnet/data/image.h>
#include <resnet/data/image_dataset.h>
#include <resnet/data/image_folder.h>
#include <resnet/data/loader.h>
#include <resnet/data/prepare.h>
#include <resnet/data/transforms.h>
