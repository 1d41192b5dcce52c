#!/usr/bin/env bash
# Installs what the demo needs, builds the training example against Debian's
# LibTorch and trains the paper's ResNet-20 on Fashion-MNIST on the CPU
# (Debian's LibTorch has no CUDA), then prints the test accuracy.
#
#   bash scripts/demo.sh [train_classifier flags]     e.g. --epochs 2
# Results: runs/fashion-mnist (metrics.csv, curves.png, summary.json, ...).
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_apt_packages
mkdir -p "$RESNET_BUILD_ROOT"
configure_build debian -DRESNET_BUILD_TESTS=OFF
cmake --build "$RESNET_BUILD_ROOT/debian" --target train_classifier
"$RESNET_BUILD_ROOT/debian/examples/train_classifier" \
  --data /usr/share/datasets/fashion-mnist --arch resnet20 \
  --out "$RESNET_ROOT/runs/fashion-mnist" "$@"
