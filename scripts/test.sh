#!/usr/bin/env bash
# Installs what the tests need, then builds and runs them against each
# supported LibTorch.
#
#   bash scripts/test.sh           Debian's LibTorch 1.13, then PyPI's torch
#                                  where the CUDA toolkit is installed (and
#                                  always under CI=true)
#   bash scripts/test.sh all       both, always (what CI runs)
#   bash scripts/test.sh debian    Debian's libtorch-dev only
#   bash scripts/test.sh pypi      PyPI's torch wheel only
#
# PyPI's torch is a CUDA build: its CMake package needs the CUDA toolkit
# (nvcc) to configure, even where no GPU is present.
set -euo pipefail
source "$(dirname "$0")/common.sh"

targets=${1:-auto}
case "$targets" in
  auto)
    if [ -n "${CI:-}" ] || command -v nvcc >/dev/null ||
      [ -x /usr/local/cuda/bin/nvcc ]; then
      targets="debian pypi"
    else
      echo "== no CUDA toolkit (nvcc): testing Debian's LibTorch only"
      targets=debian
    fi
    ;;
  all) targets="debian pypi" ;;
  debian | pypi) ;;
  *) echo "usage: $0 [auto|all|debian|pypi]" >&2; exit 2 ;;
esac

# The suite's size in CTest tests (a GoogleTest suite is one, each test of
# a parameterized suite one): fewer means something was not built or
# discovered.
RESNET_MIN_TESTS=${RESNET_MIN_TESTS:-190}

install_apt_packages
mkdir -p "$RESNET_BUILD_ROOT"
summary=()
for name in $targets; do
  if [ "$name" = pypi ]; then ensure_pypi_torch; else ensure_debian_python; fi
  # Tests and examples on explicitly: an earlier command (the demo) may have
  # configured this tree without them.
  configure_build "$name" -DRESNET_BUILD_TESTS=ON -DRESNET_BUILD_EXAMPLES=ON
  echo "== building $name"
  cmake --build "$RESNET_BUILD_ROOT/$name"
  echo "== testing $name"
  status=0
  log=$RESNET_BUILD_ROOT/$name.ctest.log
  (cd "$RESNET_BUILD_ROOT/$name" &&
    ctest -j "$(nproc)" --output-on-failure --no-tests=error --timeout 1200) |
    tee "$log" || status=$?
  report_skipped "$RESNET_BUILD_ROOT/$name"
  # A run that found fewer tests than the suite has is a failure too.
  ran=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ "${ran:-0}" -lt "$RESNET_MIN_TESTS" ]; then
    echo "== $name: ${ran:-no} tests ran, expected at least $RESNET_MIN_TESTS"
    [ $status -ne 0 ] || status=1
  fi
  summary+=("$name: $([ $status -eq 0 ] && echo "passed ($ran tests)" || echo FAILED)")
  [ $status -eq 0 ] || { printf '%s\n' "${summary[@]}"; exit $status; }
done
# CI also checks the GoogleTest fallback (the sources, for machines without
# a GTest package): it configures and builds gtest_main.
if [ -n "${CI:-}" ] && [ -d /usr/src/googletest ]; then
  echo "== configuring with the GoogleTest sources"
  configure_build gtest-fallback -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON
  cmake --build "$RESNET_BUILD_ROOT/gtest-fallback" --target gtest_main
  summary+=("gtest-fallback: configured and built")
fi
printf '%s\n' "${summary[@]}"
