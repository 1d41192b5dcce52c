#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with Clang, AddressSanitizer and
# UndefinedBehaviorSanitizer against Debian's LibTorch, replays the saved
# regressions and seeds, then fuzzes each target for a while.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...|files]
#
# "files" names the targets of the file formats, without the examples' flag
# parsers (flags_*), each of which compiles a whole example under the
# sanitizers: what CI runs. Their saved crashes are replayed by the test
# flag_fuzz_regressions instead.
# SECONDS_PER_TARGET defaults to 60. Corpora grow in build/fuzz/corpus/NAME
# (seeded from fuzz/seeds/NAME and fuzz/regressions/NAME); a crashing input
# is kept in build/fuzz/findings/NAME/ and the script fails. Add it to
# fuzz/regressions/NAME/ once fixed, so that every later run replays it.
set -euo pipefail
source "$(dirname "$0")/common.sh"

seconds=${1:-60}
shift || true
install_apt_packages clang libclang-rt-14-dev
build=$RESNET_BUILD_ROOT/fuzz
echo "== configuring $build"
mkdir -p "$RESNET_BUILD_ROOT"
CC=clang CXX=clang++ cmake -S "$RESNET_ROOT" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DRESNET_BUILD_FUZZERS=ON \
  -DRESNET_BUILD_TESTS=OFF -DRESNET_BUILD_EXAMPLES=OFF -DRESNET_INSTALL=OFF \
  $(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache) \
  >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
targets=("$@")
if [ ${#targets[@]} -eq 0 ] || [ "${targets[*]}" = files ]; then
  only_files=$([ ${#targets[@]} -gt 0 ] && echo 1 || true)
  mapfile -t targets < <(sed -n 's/^ \{4\}\([a-z0-9_]*\)$/\1/p' "$RESNET_ROOT/fuzz/CMakeLists.txt")
  if [ -n "$only_files" ]; then
    mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -v '^flags_')
  fi
fi
echo "== building ${#targets[@]} fuzz targets"
cmake --build "$build" --target "${targets[@]/#/fuzz_}"

# libFuzzer's options: inputs up to 64 KiB (a checkpoint's header and a few
# tensors), 30 s or 3 GB at most for one input, no leak reports from
# LibTorch's process-lifetime caches (leaks are not what this looks for).
options=(-max_len=65536 -timeout=30 -rss_limit_mb=3072 -print_final_stats=1)
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1

run_target() {
  local name=$1 corpus=$build/corpus/$1 findings=$build/findings/$1
  mkdir -p "$corpus" "$findings"
  local replay=()
  for d in "$RESNET_ROOT/fuzz/seeds/$name" "$RESNET_ROOT/fuzz/regressions/$name"; do
    [ -d "$d" ] && replay+=("$d")
  done
  # Every saved input once, as a test: a regression fails the run here.
  if [ ${#replay[@]} -gt 0 ]; then
    "$build/fuzz/fuzz_$name" -runs=0 "${options[@]}" "${replay[@]}" \
      >"$build/$name.replay.log" 2>&1 || {
      echo "== $name: a saved input fails"; tail -40 "$build/$name.replay.log"; return 1; }
  fi
  "$build/fuzz/fuzz_$name" "${options[@]}" -max_total_time="$seconds" \
    -artifact_prefix="$findings/" "$corpus" "${replay[@]}" \
    >"$build/$name.log" 2>&1 || {
    echo "== $name: FOUND A CRASH (inputs in $findings)"
    grep -E "ERROR|runtime error|SUMMARY|==[0-9]+==" "$build/$name.log" | head -20
    return 1
  }
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/$name.log")
  echo "== $name: ${runs:-?} inputs in ${seconds} s, no crash; corpus $(ls "$corpus" | wc -l) files"
}

# Two at a time: each target is one process on one core.
status=0
pids=()
names=()
for name in "${targets[@]}"; do
  run_target "$name" &
  pids+=($!)
  names+=("$name")
  if [ ${#pids[@]} -ge "$(nproc)" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] && echo "== fuzzing: ${#targets[@]} targets, no crash" ||
  echo "== fuzzing: FAILED"
exit $status
