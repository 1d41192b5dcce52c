#!/usr/bin/env bash
# Loads the same weight files with resnet_load_speed (C++) and load_speed.py
# (Python: torch.load / safetensors.torch.load_file), alternating, from the
# page cache, and prints a table of the medians and the C++/Python ratio:
# reading the file into tensors, and loading it into the network. For
# safetensors, Python's default (mmap: tensors read from the file when first
# used) and its pread backend (read at once) are both shown.
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
    for into in "" "$arch"; do
      for ((r = 0; r < rounds; r++)); do
        "$cxx" --file "$f" --into "$into" --repeat "$repeat" --json >>"$results"
        "$python" "$here/load_speed.py" --file "$f" --into "$into" --repeat "$repeat" --json >>"$results"
        if [ "$ext" = safetensors ]; then
          "$python" "$here/load_speed.py" --file "$f" --into "$into" --backend pread \
            --repeat "$repeat" --json >>"$results"
        fi
      done
    done
  done
done

"$python" - "$results" <<'PY'
import json, statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["file"], r["into"], r["impl"])].append(r["ms_median"])
print("| file | MB | task | C++ ms | Python ms | Python pread ms | C++ GB/s | C++ / Python |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
sizes = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    sizes[r["file"]] = r["bytes"]
for f, into in dict.fromkeys((k[0], k[1]) for k in runs):
    med = {impl: statistics.median(runs[(f, into, impl)])
           for impl in ("c++", "python", "python-pread") if runs.get((f, into, impl))}
    mb = sizes[f] / 1e6
    pread = f"{med['python-pread']:.1f}" if "python-pread" in med else "-"
    task = f"into {into}" if into else "read"
    name = f.rsplit("/", 1)[-1]
    print(f"| {name} | {mb:.0f} | {task} | {med['c++']:.1f} | {med['python']:.1f} | "
          f"{pread} | {mb / med['c++']:.2f} | {med['python'] / med['c++']:.2f} |")
PY
