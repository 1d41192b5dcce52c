#!/usr/bin/env bash
# The GPU measurements of RESULTS.md in one go, on a machine with an NVIDIA
# GPU, PyTorch (with torchvision) in its Python, the CUDA toolkit, CMake and
# Ninja: builds the tests and the benchmark against that PyTorch's LibTorch,
# runs the CUDA tests, then compare.sh's GPU rows.
#
#   bash examples/benchmark/gpu_check.sh [OUT_DIR]      (default /tmp/resnet-gpu)
#
# RESNET_GTEST_SOURCE_DIR=/path/to/googletest builds GoogleTest from source
# where no GTest package is installed.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-/tmp/resnet-gpu}
python=${PYTHON:-python3}
build=$out/build
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv |
  tee "$out/gpu.txt"
"$python" -c 'import torch, torchvision; print("torch", torch.__version__,
  "torchvision", torchvision.__version__, "cuda", torch.version.cuda)' |
  tee -a "$out/gpu.txt"

args=(-G Ninja -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_PREFIX_PATH=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  "-DRESNET_PYTHON=$(command -v "$python")")
[ -z "${RESNET_GTEST_SOURCE_DIR:-}" ] ||
  args+=("-DRESNET_GTEST_SOURCE_DIR=$RESNET_GTEST_SOURCE_DIR")
cmake -S "$root" -B "$build" "${args[@]}" >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; exit 1; }
cmake --build "$build" --target resnet_tests resnet_benchmark >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; exit 1; }

# The CUDA tests, and the CPU ones that exercise the same code.
"$build/tests/resnet_tests" \
  --gtest_filter='CudaGraph.*:*FuseForInference*:Fused.*:Precision.*' 2>&1 |
  tee "$out/tests.txt" | tail -15

bash "$root/examples/benchmark/compare.sh" --cxx "$build/examples/resnet_benchmark" \
  --python "$python" --device cuda --rows gpu --rounds "${ROUNDS:-3}" \
  --out "$out/gpu.jsonl" | tee "$out/table.md"
