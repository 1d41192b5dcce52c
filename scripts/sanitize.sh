#!/usr/bin/env bash
# Builds the tests and examples with AddressSanitizer and
# UndefinedBehaviorSanitizer (GCC) against Debian's LibTorch and runs them.
# LibTorch itself is not instrumented. A leak, an invalid access or
# undefined behaviour fails the test it happens in; the only suppressions,
# in tests/sanitizers/lsan.supp, are leaks of allocations LibTorch's own
# code makes (its zip reader, on damaged archives).
#
#   bash scripts/sanitize.sh [ctest -R regex]
#
# Left out: the torchvision parity tests (about 7 GB of references, and no
# code of the library's that the other tests do not run), the install
# checks, the benchmark programs, and the output-shape tests of the deepest
# and widest networks (the same block and network code as their shallower
# kin, at several times the run time under the sanitizers).
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_apt_packages
ensure_debian_python
# -O1 with assertions on (no NDEBUG), the usual sanitizer build; it also
# compiles faster than -O3.
configure_build sanitize -DRESNET_BUILD_TESTS=ON -DRESNET_BUILD_EXAMPLES=ON \
  -DRESNET_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS_RELEASE=-O1
echo "== building $RESNET_BUILD_ROOT/sanitize"
# The test suite and the examples it runs that read files and write
# checkpoints; the benchmark programs are left out.
cmake --build "$RESNET_BUILD_ROOT/sanitize" --target resnet_tests classify \
  train_classifier inspect_checkpoint
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
export LSAN_OPTIONS=suppressions=$RESNET_ROOT/tests/sanitizers/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== testing with address,undefined"
log=$RESNET_BUILD_ROOT/sanitize.ctest.log
status=0
(cd "$RESNET_BUILD_ROOT/sanitize" &&
  ctest -j "$(nproc)" --output-on-failure --no-tests=error --timeout 1800 \
    -E 'Parity|parity|consumer_|benchmark_|OutputShapesWithBothStems/.*(101|152|wide_)' \
    ${1:+-R "$1"}) | tee "$log" || status=$?
ran=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
if [ -z "${1:-}" ] && [ "${ran:-0}" -lt 180 ]; then
  echo "== ${ran:-no} tests ran, expected at least 180"
  status=1
fi
# Sanitizer reports make a test fail (halt_on_error, exit status), and
# nothing may be reported by a test that passes.
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$log"; then
  echo "== sanitizer reports in $log"
  status=1
fi
echo "sanitize: $([ $status -eq 0 ] && echo "passed (${ran:-0} tests)" || echo FAILED)"
exit $status
