#!/usr/bin/env bash
# Installs what the demo needs, builds the training example and trains the
# paper's ResNet-20 on Fashion-MNIST, then prints the test accuracy.
#
# Where nvidia-smi sees a GPU and the CUDA toolkit (nvcc) is installed, it
# builds against PyPI's CUDA torch (in ~/.cache/resnet/venv) and trains on
# the GPU; otherwise against Debian's LibTorch, on the CPU.
#
#   bash scripts/demo.sh [train_classifier flags]     e.g. --epochs 2
# Results: runs/fashion-mnist (metrics.csv, curves.svg, summary.json, ...).
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_apt_packages
mkdir -p "$RESNET_BUILD_ROOT"
tree=debian
if nvidia-smi -L >/dev/null 2>&1 &&
  { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  echo "== a GPU is visible: building against PyPI's CUDA torch"
  ensure_pypi_torch
  tree=pypi
else
  echo "== no GPU visible (nvidia-smi) or no CUDA toolkit (nvcc): training on the CPU"
fi
configure_build "$tree" -DRESNET_BUILD_TESTS=OFF
cmake --build "$RESNET_BUILD_ROOT/$tree" --target train_classifier
"$RESNET_BUILD_ROOT/$tree/examples/train_classifier" \
  --data /usr/share/datasets/fashion-mnist --arch resnet20 \
  --out "$RESNET_ROOT/runs/fashion-mnist" "$@"
