#pragma once

// Fast inference: a network with its batch norms folded into oneDNN's or
// cuDNN's fused convolutions, CUDA-graph replay, a CPU memory cache, and
// precision (channels_last, casting, autocast).

#include <resnet/inference/cpu_precision.h>
#include <resnet/inference/cuda_graph.h>
#include <resnet/inference/fold.h>
#include <resnet/inference/fused.h>
#include <resnet/inference/fused_conv.h>
#include <resnet/inference/memory.h>
#include <resnet/inference/precision.h>
#include <resnet/inference/quantize.h>
#include <resnet/inference/quantized_file.h>
