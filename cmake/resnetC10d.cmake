# Data-parallel training (include/resnet/train/distributed.h) runs on c10d's Gloo
# backend, whose headers need Gloo's own beside LibTorch's (Debian:
# libgloo-dev; PyPI's wheels ship none, and build with Debian's).
# resnet_check_c10d() sets RESNET_HAVE_C10D_GLOO where they compile, and
# RESNET_C10D_DEFINITIONS to the definitions a source that includes
# <resnet/train/distributed.h> then needs: USE_DISTRIBUTED and USE_C10D_GLOO (which
# LibTorch's CMake target defines already, repeated for a LibTorch whose
# target does not) and RESNET_WITH_C10D=1; with NCCL also USE_C10D_NCCL,
# RESNET_WITH_NCCL=1 and the include folder RESNET_C10D_INCLUDE_DIRS.
include(CheckCXXSourceCompiles)
include(CMakePushCheckState)

function(resnet_check_c10d)
  cmake_push_check_state(RESET)
  set(CMAKE_REQUIRED_INCLUDES ${TORCH_INCLUDE_DIRS})
  set(CMAKE_REQUIRED_DEFINITIONS -DUSE_DISTRIBUTED -DUSE_C10D_GLOO)
  # The C++ standard LibTorch asks of its users (C++20 for PyPI's 2.x).
  get_target_property(features torch INTERFACE_COMPILE_FEATURES)
  set(std 17)
  if(features MATCHES "cxx_std_([2-9][0-9])")
    set(std ${CMAKE_MATCH_1})
  endif()
  set(CMAKE_REQUIRED_FLAGS
      "${CMAKE_CXX${std}_STANDARD_COMPILE_OPTION} ${TORCH_CXX_FLAGS}")
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
  check_cxx_source_compiles(
    "#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
int main() { return sizeof(c10d::ProcessGroupGloo) > 0 && sizeof(c10d::TCPStoreOptions) > 0 ? 0 : 1; }"
    RESNET_HAVE_C10D_GLOO)
  # NCCL for CUDA tensors, where LibTorch has CUDA and the nccl.h it was
  # built with is at hand: PyPI's wheels depend on the nvidia-nccl wheel,
  # which installs beside torch. Never another nccl.h (e.g. the CUDA
  # toolkit's, often in /usr/local/include): its structs can differ in size
  # from LibTorch's, which crashes. RESNET_NCCL_INCLUDE_DIR names another.
  set(nccl_definitions)
  if(RESNET_HAVE_C10D_GLOO AND TORCH_CUDA_LIBRARIES)
    find_path(
      RESNET_NCCL_INCLUDE_DIR nccl.h
      PATHS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include"
      NO_DEFAULT_PATH
      DOC "nccl.h of the NCCL LibTorch was built with")
    if(RESNET_NCCL_INCLUDE_DIR)
      set(CMAKE_REQUIRED_INCLUDES ${TORCH_INCLUDE_DIRS}
                                  ${RESNET_NCCL_INCLUDE_DIR})
      set(CMAKE_REQUIRED_DEFINITIONS -DUSE_DISTRIBUTED -DUSE_C10D_GLOO
                                     -DUSE_C10D_NCCL)
      check_cxx_source_compiles(
        "#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/csrc/cuda/nccl.h>
int main() { return sizeof(c10d::ProcessGroupNCCL::Options) > 0 && NCCL_MAJOR > 0 ? 0 : 1; }"
        RESNET_HAVE_C10D_NCCL)
    endif()
    if(RESNET_HAVE_C10D_NCCL)
      set(nccl_definitions USE_C10D_NCCL RESNET_WITH_NCCL=1)
      set(RESNET_C10D_INCLUDE_DIRS ${RESNET_NCCL_INCLUDE_DIR} PARENT_SCOPE)
    else()
      message(STATUS "resnet: no nccl.h of LibTorch's NCCL (set "
                     "RESNET_NCCL_INCLUDE_DIR): CUDA tensors go through Gloo")
    endif()
  endif()
  cmake_pop_check_state()
  set(RESNET_C10D_DEFINITIONS USE_DISTRIBUTED USE_C10D_GLOO RESNET_WITH_C10D=1
      ${nccl_definitions} PARENT_SCOPE)
  if(NOT RESNET_HAVE_C10D_GLOO)
    message(STATUS "resnet: c10d Gloo headers do not compile with this "
                   "LibTorch (Debian: libgloo-dev): training runs as one "
                   "process and the multi-process tests skip")
  endif()
endfunction()
