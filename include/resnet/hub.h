#pragma once

// Published weights by name: the registry of torchvision's and timm's
// ImageNet weights, the caches torch.hub and huggingface_hub fill, and
// downloads into them (libcurl, OpenSSL's SHA-256: link resnet::hub).

#include <resnet/hub/cache.h>
#include <resnet/hub/download.h>
#include <resnet/hub/imagenet_classes.h>
#include <resnet/hub/pretrained.h>
#include <resnet/hub/registry.h>
