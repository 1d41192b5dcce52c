# Shared by the scripts in this folder: installing what the project needs on
# Debian 12 and configuring a build against either LibTorch. Sourced, not run.

RESNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The PyPI torch wheel is large (several GB with its CUDA libraries): keep its
# virtual environment outside the checkout so every clone reuses it.
RESNET_VENV=${RESNET_VENV:-$HOME/.cache/resnet/venv}
# Debian's python3 with its torch 1.13 and torchvision, plus timm and
# safetensors from PyPI (which Debian 12 does not package), for the tests
# against Debian's LibTorch.
RESNET_DEBIAN_VENV=${RESNET_DEBIAN_VENV:-$HOME/.cache/resnet/debian-venv}
RESNET_BUILD_ROOT=${RESNET_BUILD_ROOT:-$RESNET_ROOT/build}

# Debian packages for building and testing against Debian's LibTorch 1.13.
RESNET_APT_PACKAGES=(
  cmake ninja-build g++ ccache git
  libtorch-dev libgloo-dev libgtest-dev libpng-dev libturbojpeg0-dev zlib1g-dev pkg-config
  nlohmann-json3-dev libcli11-dev libcurl4-openssl-dev libssl-dev
  dataset-fashion-mnist doxygen
  python3 python3-venv python3-torch python3-torchvision python3-pil
)

# ccache: paths inside the checkout count relative to it, so that another
# clone of the same sources reuses what one has compiled.
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR=$RESNET_ROOT CCACHE_NOHASHDIR=true

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for p in "${RESNET_APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
      missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# PyPI's torch, torchvision, timm and safetensors in $RESNET_VENV, with ONNX
# Runtime and OpenVINO for the benchmark's comparison, installed once and
# reused.
ensure_pypi_torch() {
  if [ ! -x "$RESNET_VENV/bin/python" ]; then
    echo "== creating $RESNET_VENV"
    /usr/bin/python3 -m venv "$RESNET_VENV"
  fi
  if ! "$RESNET_VENV/bin/python" -c "import torch, torchvision, timm, safetensors, onnxruntime, onnx, openvino" 2>/dev/null; then
    echo "== pip install torch torchvision timm safetensors onnxruntime onnx openvino into $RESNET_VENV"
    "$RESNET_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      torch torchvision timm safetensors onnxruntime onnx openvino
  fi
}

# Debian's python3 (torch 1.13, torchvision 0.14) seen through a virtual
# environment that adds timm and safetensors. timm is installed without its
# dependencies so that pip keeps Debian's torch instead of fetching another.
ensure_debian_python() {
  if [ ! -x "$RESNET_DEBIAN_VENV/bin/python" ]; then
    echo "== creating $RESNET_DEBIAN_VENV"
    /usr/bin/python3 -m venv --system-site-packages "$RESNET_DEBIAN_VENV"
  fi
  if ! "$RESNET_DEBIAN_VENV/bin/python" -c "import torch, torchvision, timm, safetensors" 2>/dev/null; then
    echo "== pip install timm safetensors into $RESNET_DEBIAN_VENV"
    "$RESNET_DEBIAN_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      safetensors huggingface_hub pyyaml &&
      "$RESNET_DEBIAN_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --no-deps timm
  fi
}

# configure_build NAME [cmake args...]: configures $RESNET_BUILD_ROOT/NAME
# against Debian's LibTorch (NAME=debian) or PyPI's (NAME=pypi).
configure_build() {
  local name=$1
  shift
  local args=(-G Ninja -DCMAKE_BUILD_TYPE=Release)
  if command -v ccache >/dev/null; then
    args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  if [ "$name" = pypi ]; then
    local prefix
    prefix=$("$RESNET_VENV/bin/python" -c \
      'import torch; print(torch.utils.cmake_prefix_path)')
    args+=("-DCMAKE_PREFIX_PATH=$prefix")
  else
    args+=("-DRESNET_PYTHON=$RESNET_DEBIAN_VENV/bin/python")
  fi
  echo "== configuring $RESNET_BUILD_ROOT/$name"
  mkdir -p "$RESNET_BUILD_ROOT"
  cmake -S "$RESNET_ROOT" -B "$RESNET_BUILD_ROOT/$name" "${args[@]}" "$@" \
    >"$RESNET_BUILD_ROOT/$name.configure.log" 2>&1 || {
    cat "$RESNET_BUILD_ROOT/$name.configure.log"
    return 1
  }
}

# The GoogleTest tests that skipped in the last ctest run of build $1 (no
# GPU, no c10d, an older LibTorch): CTest runs a plain suite as one test,
# which passes when some of its tests skip, so they are listed from the log.
report_skipped() {
  local log=$1/Testing/Temporary/LastTest.log names
  [ -f "$log" ] || return 0
  names=$(sed -n 's/^\[  SKIPPED \] \([A-Za-z0-9_/.]*\) (.*/\1/p' "$log" | sort -u)
  if [ -n "$names" ]; then
    echo "== $(basename "$1"): $(echo "$names" | wc -l) GoogleTest tests skipped:"
    echo "$names" | sed 's/^/     /'
  fi
}
