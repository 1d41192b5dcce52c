#pragma once

// Training: optimizers, the learning-rate schedule, losses, mixed precision's
// loss scaling, a CUDA-graph training step, checkpoints that survive being
// killed, metrics, logs and progress, and data-parallel training
// (<resnet/train/distributed.h>). Needs nlohmann/json (Debian:
// nlohmann-json3-dev) for checkpoints and metrics.

#include <resnet/train/checkpoint_folder.h>
#include <resnet/train/cuda_graph_step.h>
#include <resnet/train/distributed.h>
#include <resnet/train/evaluate.h>
#include <resnet/train/fine_tune.h>
#include <resnet/train/grad_scaler.h>
#include <resnet/train/interrupt.h>
#include <resnet/train/log.h>
#include <resnet/train/losses.h>
#include <resnet/train/metrics.h>
#include <resnet/train/optim.h>
#include <resnet/train/plot.h>
#include <resnet/train/progress.h>
#include <resnet/train/schedule.h>
#include <resnet/train/train_step.h>
#include <resnet/train/trained_config.h>
