#!/usr/bin/env bash
# Loads the same weight files with resnet_load_speed (C++) and load_speed.py
# (Python: torch.load / safetensors.torch.load_file), alternating, from the
# page cache, and prints a table of the medians and the C++/Python ratio.
# The files are torchvision's resnet50 and wide_resnet101_2 with random
# weights, written once into --dir as .pth (torch.save(model.state_dict()))
# and .safetensors.
#
#   examples/benchmark/compare_load.sh [--cxx PATH] [--python PATH]
#                                      [--rounds 3] [--repeat 5] [--dir DIR]
#                                      [--archs "resnet50 wide_resnet101_2"]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cxx=$here/../../build/debian/examples/resnet_load_speed
python=${RESNET_DEBIAN_VENV:-$HOME/.cache/resnet/debian-venv}/bin/python
rounds=3
repeat=5
dir=${TMPDIR:-/tmp}/resnet-load-speed
archs="resnet50 wide_resnet101_2"
while [ $# -gt 0 ]; do
  case "$1" in
    --cxx) cxx=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --archs) archs=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "compare_load.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -x "$cxx" ] || { echo "compare_load.sh: no resnet_load_speed at $cxx (build it, or pass --cxx)" >&2; exit 2; }

mkdir -p "$dir"
"$python" - "$dir" $archs <<'PY'
import os, sys, torch, torchvision, safetensors.torch
out = sys.argv[1]
for arch in sys.argv[2:]:
    pth, st = f"{out}/{arch}.pth", f"{out}/{arch}.safetensors"
    if os.path.exists(pth) and os.path.exists(st):
        continue
    torch.manual_seed(0)
    state = getattr(torchvision.models, arch)().state_dict()
    torch.save(state, pth)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, st)
PY

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for arch in $archs; do
  for ext in pth safetensors; do
    f=$dir/$arch.$ext
    cat "$f" >/dev/null # into the page cache
    for ((r = 0; r < rounds; r++)); do
      "$cxx" --file "$f" --repeat "$repeat" --json >>"$results"
      "$python" "$here/load_speed.py" --file "$f" --repeat "$repeat" --json >>"$results"
    done
  done
done

"$python" - "$results" <<'PY'
import json, statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["file"], r["impl"])].append(r)
print("| file | MB | C++ ms | Python ms | C++ MB/s | Python MB/s | C++ / Python |")
print("|---|---:|---:|---:|---:|---:|---:|")
for f in dict.fromkeys(k[0] for k in runs):
    c = statistics.median(r["ms_median"] for r in runs[(f, "c++")])
    p = statistics.median(r["ms_median"] for r in runs[(f, "python")])
    mb = runs[(f, "c++")][0]["bytes"] / 1e6
    name = f.rsplit("/", 1)[-1]
    print(f"| {name} | {mb:.0f} | {c:.1f} | {p:.1f} | {mb / c * 1e3:.0f} | "
          f"{mb / p * 1e3:.0f} | {p / c:.2f} |")
PY
