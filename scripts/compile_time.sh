#!/usr/bin/env bash
# The compile time of including the library: a translation unit with one
# #include and an empty main, compiled with the flags of a configured build
# (the example hello_resnet's command line), RUNS times each, the variants
# alternating; prints the median seconds of each and its cost over
# <torch/torch.h>. Measure on a quiet machine.
#
#   bash scripts/compile_time.sh [BUILD_DIR] [RUNS]   (default build/debian 5)
#
# HEADERS (space-separated) chooses the includes; <torch/torch.h> is always
# measured, as the base.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/debian}
runs=${2:-5}
object=examples/CMakeFiles/hello_resnet.dir/hello_resnet.cpp.o
command=$(ninja -C "$build" -t commands "$object" | tail -1)
[ -n "$command" ] || { echo "no compile command for $object in $build" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
read -r -a chosen <<<"${HEADERS:-resnet/resnet.h resnet/model.h resnet/model/network.h}"
headers=(torch/torch.h "${chosen[@]}")
for h in "${headers[@]}"; do
  printf '#include <%s>\nint main() {}\n' "$h" >"$work/$(echo "$h" | tr / _).cpp"
done
declare -A times
for ((run = 1; run <= runs; run++)); do
  for h in "${headers[@]}"; do
    src="$work/$(echo "$h" | tr / _).cpp"
    # The build's command with this source and object, without ccache
    # (a cache hit would measure nothing).
    cmd=$(echo "$command" | sed -E "s#^(ccache |[^ ]*ccache )##; s# -o [^ ]+# -o $work/out.o#; s# -c [^ ]+# -c $src#; s# -MD -MT [^ ]+ -MF [^ ]+##")
    start=$(date +%s.%N)
    (cd "$build" && eval "$cmd")
    end=$(date +%s.%N)
    times[$h]+="$(echo "$end - $start" | bc) "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${times[torch/torch.h]}" | median)
printf '%-28s %9s %9s\n' "#include" "median s" "over torch"
for h in "${headers[@]}"; do
  m=$(echo "${times[$h]}" | median)
  printf '%-28s %9.2f %+9.2f\n' "<$h>" "$m" "$(echo "$m - $base" | bc)"
done
echo "($runs runs each, alternating; $(nproc) cores; $(lscpu | sed -n 's/^Model name: *//p'))"
