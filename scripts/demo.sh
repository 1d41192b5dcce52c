#!/usr/bin/env bash
# Installs what the demo needs, builds it against Debian's LibTorch and runs
# it: hello_resnet builds a ResNet on the best device and prints its output
# shape and parameter count.
#
#   bash scripts/demo.sh [ARCH] [IMAGE_SIZE]
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_apt_packages
mkdir -p "$RESNET_BUILD_ROOT"
configure_build debian -DRESNET_BUILD_TESTS=OFF
cmake --build "$RESNET_BUILD_ROOT/debian" --target hello_resnet
"$RESNET_BUILD_ROOT/debian/examples/hello_resnet" "$@"
