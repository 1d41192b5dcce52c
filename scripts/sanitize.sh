#!/usr/bin/env bash
# Builds the tests of what reads and writes files, decodes data and talks to
# other processes (weights, checkpoints, torch.save, safetensors, the
# hostile-file corpus, inputs, training files, data readers and the loader,
# distributed, the caches and downloads of published weights), with classify
# and inspect_checkpoint, under AddressSanitizer and
# UndefinedBehaviorSanitizer (GCC) against Debian's LibTorch, and runs them.
# LibTorch itself is not instrumented. A leak, an invalid access or
# undefined behaviour fails the test it happens in; nothing is suppressed.
#
#   bash scripts/sanitize.sh [ctest -R regex]
#
# Left out: the network, inference, optimizer and timm tests, the
# torchvision parity tests and the training runs of train_classifier (code
# that handles no outside input, run by the plain builds), the install
# checks and the benchmark programs.
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_apt_packages
ensure_debian_python
# -O1 with assertions on (no NDEBUG), the usual sanitizer build; it also
# compiles faster than -O3.
configure_build sanitize -DRESNET_BUILD_TESTS=ON -DRESNET_BUILD_EXAMPLES=ON \
  -DRESNET_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS_RELEASE=-O1
echo "== building $RESNET_BUILD_ROOT/sanitize"
# The tests and the examples that read files; the training runs and the
# benchmark programs are left out.
cmake --build "$RESNET_BUILD_ROOT/sanitize" --target resnet_tests classify \
  inspect_checkpoint resnet_hub_registry_tests resnet_hub_download_tests
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== testing with address,undefined"
log=$RESNET_BUILD_ROOT/sanitize.ctest.log
status=0
(cd "$RESNET_BUILD_ROOT/sanitize" &&
  ctest -j "$(nproc)" --output-on-failure --no-tests=error --timeout 1800 \
    -E 'Parity|parity|consumer_|benchmark_|train_classifier_|flag_fuzz_' \
    ${1:+-R "$1"}) | tee "$log" || status=$?
report_skipped "$RESNET_BUILD_ROOT/sanitize"
ran=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
if [ -z "${1:-}" ] && [ "${ran:-0}" -lt 45 ]; then
  echo "== ${ran:-no} tests ran, expected at least 45"
  status=1
fi
# Sanitizer reports make a test fail (halt_on_error, exit status), and
# nothing may be reported by a test that passes: CTest keeps every test's
# output in LastTest.log.
all=$RESNET_BUILD_ROOT/sanitize/Testing/Temporary/LastTest.log
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$log" "$all"; then
  echo "== sanitizer reports in $all"
  status=1
fi
echo "sanitize: $([ $status -eq 0 ] && echo "passed (${ran:-0} tests)" || echo FAILED)"
exit $status
