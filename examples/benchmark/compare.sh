#!/usr/bin/env bash
# Runs resnet_benchmark (C++) and torchvision_bench.py (Python) on the same
# workloads, alternating between them, and prints a table of images/s and the
# C++/Python ratio (medians over the rounds). On the CPU the C++ side runs
# twice: as is, and with --cache-memory (the library's CPU memory cache), and
# the fused rows also run ONNX Runtime (onnxruntime_bench.py) where the Python
# has the onnxruntime and onnx packages.
#
#   examples/benchmark/compare.sh [--cxx PATH] [--python PATH] [--rounds 3]
#                                 [--threads 2] [--device cpu] [--out FILE]
#                                 [--rows cpu|fused|gpu|quick|int8|int8-quick]
#
# --cxx      resnet_benchmark to run (default build/debian/examples/resnet_benchmark)
# --python   Python with the torch that LibTorch came from (default /usr/bin/python3:
#            Debian's; use the virtual environment's python for a pip wheel)
# --rows     cpu: the README's table; fused: its fused rows alone; gpu: the
#            ResNet-50 rows for a GPU; quick: two small rows (for a smoke test);
#            int8: the fused network in float32, bfloat16 and int8 against
#            ONNX Runtime in float32 and int8 (QDQ), PyTorch's own int8 (x86
#            engine) and OpenVINO in float32, bfloat16 and int8 (where
#            installed), ResNet-18/50 at batch 1 and 8; int8-quick: one small
#            such row
# --out      also write every measurement as JSON lines to FILE
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cxx=$here/../../build/debian/examples/resnet_benchmark
python=/usr/bin/python3
rounds=3
threads=2
device=cpu
rows=cpu
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --cxx) cxx=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -x "$cxx" ] || { echo "compare.sh: no resnet_benchmark at $cxx (build it, or pass --cxx)" >&2; exit 2; }

# One workload per line: the flags both programs take.
fused_rows=(
  "--arch resnet18 --batch 1 --iters 20 --fuse"
  "--arch resnet18 --batch 8 --iters 10 --fuse"
  "--arch resnet18 --batch 32 --iters 5 --fuse"
  "--arch resnet50 --batch 1 --iters 10 --fuse"
  "--arch resnet50 --batch 8 --iters 5 --fuse"
  "--arch resnet50 --batch 32 --iters 3 --fuse"
)
case "$rows" in
  cpu)
    workloads=(
      "--arch resnet18 --batch 1 --iters 20"
      "--arch resnet18 --batch 8 --iters 10"
      "--arch resnet18 --batch 32 --iters 5"
      "--arch resnet50 --batch 1 --iters 10"
      "--arch resnet50 --batch 8 --iters 5"
      "--arch resnet50 --batch 32 --iters 3"
      "${fused_rows[@]}"
      "--arch resnet18 --stem cifar --size 32 --batch 32 --mode train --iters 5"
    ) ;;
  fused) workloads=("${fused_rows[@]}") ;;
  gpu)
    workloads=(
      "--arch resnet50 --batch 256 --mode train --dtype bf16 --channels-last --iters 30 --warmup 10"
      "--arch resnet50 --batch 256 --mode train --dtype bf16 --channels-last --iters 30 --warmup 10 --cuda-graph"
      "--arch resnet18 --stem cifar --size 32 --batch 512 --mode train --dtype bf16 --channels-last --iters 50 --warmup 10"
      "--arch resnet18 --stem cifar --size 32 --batch 512 --mode train --dtype bf16 --channels-last --iters 50 --warmup 10 --cuda-graph"
      "--arch resnet50 --batch 1 --iters 200 --warmup 20"
      "--arch resnet50 --batch 1 --iters 200 --warmup 20 --cuda-graph"
      "--arch resnet50 --batch 1 --iters 200 --warmup 20 --cuda-graph --fuse"
      "--arch resnet50 --batch 256 --dtype bf16 --channels-last --iters 50 --warmup 10"
      "--arch resnet50 --batch 256 --dtype bf16 --channels-last --iters 50 --warmup 10 --fuse"
    ) ;;
  quick)
    workloads=(
      "--arch resnet18 --size 64 --batch 2 --iters 2 --warmup 1"
      "--arch resnet18 --size 64 --batch 2 --iters 2 --warmup 1 --fuse"
    ) ;;
  int8)
    workloads=(
      "--arch resnet18 --batch 1 --iters 40 --fuse"
      "--arch resnet18 --batch 8 --iters 10 --fuse"
      "--arch resnet50 --batch 1 --iters 20 --fuse"
      "--arch resnet50 --batch 8 --iters 5 --fuse"
    ) ;;
  int8-quick) workloads=("--arch resnet18 --size 64 --batch 2 --iters 2 --warmup 1 --fuse") ;;
  *) echo "compare.sh: --rows expects cpu, fused, gpu, quick, int8 or int8-quick" >&2; exit 2 ;;
esac
if [[ $rows == int8* ]]; then
  [ "$device" = cpu ] || { echo "compare.sh: the int8 rows run on the CPU" >&2; exit 2; }
  exec "$python" "$here/compare_int8.py" --cxx "$cxx" --python "$python" \
    --rounds "$rounds" --threads "$threads" ${out:+--out "$out"} -- "${workloads[@]}"
fi

onnxruntime=false
if [ "$device" = cpu ] && "$python" -c "import onnxruntime, onnx" 2>/dev/null; then
  onnxruntime=true
elif [ "$device" = cpu ]; then
  echo "compare.sh: no onnxruntime in $python: the table has no ONNX Runtime column" \
    "(pip install onnxruntime onnx)" >&2
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= rounds; round++)); do
  for w in "${workloads[@]}"; do
    # shellcheck disable=SC2086
    "$cxx" $w --device "$device" --threads "$threads" --json >>"$results"
    if [ "$device" = cpu ]; then
      # shellcheck disable=SC2086
      "$cxx" $w --device "$device" --threads "$threads" --cache-memory \
        --json >>"$results"
    fi
    # shellcheck disable=SC2086
    "$python" "$here/torchvision_bench.py" $w --device "$device" \
      --threads "$threads" --json >>"$results" 2> >(grep -v -i warn >&2)
    if $onnxruntime && [[ " $w " == *" --fuse "* ]]; then
      # shellcheck disable=SC2086
      "$python" "$here/onnxruntime_bench.py" $w --threads "$threads" --json \
        >>"$results"
    fi
  done
  echo "round $round of $rounds done" >&2
done
[ -z "$out" ] || cp "$results" "$out"

"$python" - "$results" <<'EOF'
import json, statistics, sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
key = lambda r: (r["arch"], r["mode"], r["batch"], r["size"], r["dtype"],
                 r["channels_last"], r["fuse"], r["cuda_graph"])
side = lambda r: "cache" if r.get("cache_memory") else r["impl"]
ort = any(r["impl"] == "onnxruntime" for r in runs)
rows = {}
for r in runs:
    rows.setdefault(key(r), {}).setdefault(side(r), []).append(r)
first = runs[0]
py = next(r for r in runs if r["impl"] == "python")
cache = any(r.get("cache_memory") for r in runs)
print(f"LibTorch {first['torch']} (C++) vs torch {py['torch']} (Python), "
      f"{first['device']}, {first['threads']} threads, "
      f"median img/s of {len(rows[key(first)]['python'])} alternating rounds\n")
if cache:
    print("| workload | C++ img/s | C++ with memory cache | Python img/s "
          "| C++ / Python | with cache / Python |"
          + (" ONNX Runtime img/s | with cache / ONNX Runtime |" if ort else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if ort else ""))
else:
    print("| workload | C++ img/s | Python img/s | C++ / Python |")
    print("|---|---:|---:|---:|")
for k, by in rows.items():
    arch, mode, batch, size, dtype, cl, fuse, graph = k
    what = f"{arch} {mode} bs{batch} {size}x{size}"
    if by["c++"][0]["stem"] == "cifar" and size >= 64:
        what += " cifar stem"
    if dtype != "fp32":
        what += f" {dtype}"
    if cl:
        what += " channels_last"
    if fuse:
        what += " fused (C++) / jit.optimize_for_inference (Python)"
    if graph:
        what += " CUDA graph"
    med = lambda s: statistics.median(r["img_per_s"] for r in by[s])
    c, p = med("c++"), med("python")
    if cache:
        cc = med("cache")
        extra = ""
        if ort and "onnxruntime" in by:
            o = med("onnxruntime")
            extra = f" {o:.1f} | {cc / o:.2f} |"
        elif ort:
            extra = " | |"
        print(f"| {what} | {c:.1f} | {cc:.1f} | {p:.1f} | {c / p:.2f} | {cc / p:.2f} |{extra}")
    else:
        print(f"| {what} | {c:.1f} | {p:.1f} | {c / p:.2f} |")
EOF
