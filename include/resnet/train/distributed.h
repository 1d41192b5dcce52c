#pragma once

// Data-parallel training over LibTorch's own c10d (Gloo; NCCL for CUDA
// tensors where built with it): every process holds a copy of the model and
// a share of the batch; the processes start from rank 0's weights and
// average their gradients in buckets while each backward pass runs
// (DataParallel; average_gradients after it), so that one optimizer step in
// each equals a step on the whole batch.
//
// The processes meet as torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT (from_environment); rank 0 (or torchrun 2.x's
// agent) serves a TCPStore at MASTER_ADDR:MASTER_PORT through which the
// others find it.
//
// c10d's Gloo headers need Gloo's own headers (Debian: libgloo-dev), which
// not every LibTorch build comes with (PyPI's wheels have none). Define
// RESNET_WITH_C10D=1 where <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
// compiles (with USE_DISTRIBUTED and USE_C10D_GLOO, which LibTorch's CMake
// target defines); without it available() is false and a Group of more than
// one process cannot be made, while a single process (no RANK/WORLD_SIZE)
// still works, every collective then being a no-op. NCCL (nccl_available())
// needs RESNET_WITH_NCCL=1 and USE_C10D_NCCL, with the nccl.h LibTorch was
// built with (cmake/resnetC10d.cmake finds it). Not part of
// <resnet/resnet.h>.

#include <resnet/train/distributed/data_parallel.h>
#include <resnet/train/distributed/environment.h>
#include <resnet/train/distributed/group.h>
#include <resnet/train/distributed/sync_batch_norm.h>
