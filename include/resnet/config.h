#pragma once

// What this build of the library can use, decided once from the platform and
// the LibTorch it compiles against. Each macro is 0 or 1; define one before
// including the library to override it, and then alike in every translation
// unit of a program: the classes and functions that depend on a macro (the
// data-parallel ones on RESNET_WITH_C10D, say) are inline, and two
// definitions of one in a program are undefined behaviour that the linker
// does not report.
//
//   RESNET_HAS_POSIX_FILES  open/fstat/pread (files are checked before they
//                           are opened; otherwise C++ streams)
//   RESNET_HAS_MMAP         mmap (weight files are mapped, not copied)
//   RESNET_WITH_CUDA        a CUDA build of LibTorch and the CUDA runtime
//                           headers (CUDA graphs, cuDNN's fused calls);
//                           RESNET_NO_CUDA forces 0
//   RESNET_WITH_C10D        c10d with Gloo (data-parallel training); set by
//                           cmake/resnetC10d.cmake with USE_C10D_GLOO
//   RESNET_WITH_NCCL        c10d's NCCL for CUDA tensors (with USE_C10D_NCCL)
//   RESNET_AUTOCAST_BY_DEVICE_TYPE  autocast's functions take a device type
//                           (LibTorch 2.4 and later)
//   RESNET_HAS_UINT_DTYPES  uint16/32/64 tensors (LibTorch 2.3 and later)
//   RESNET_HAS_FLOAT8, RESNET_HAS_FLOAT8_FNUZ, RESNET_HAS_FLOAT8_E8M0,
//   RESNET_HAS_FLOAT4       the newer element types, from the release that
//                           added each

#include <torch/version.h>

#if !defined(RESNET_HAS_POSIX_FILES)
#if defined(__unix__) || defined(__APPLE__)
#define RESNET_HAS_POSIX_FILES 1
#else
#define RESNET_HAS_POSIX_FILES 0
#endif
#endif

#if !defined(RESNET_HAS_MMAP)
#define RESNET_HAS_MMAP RESNET_HAS_POSIX_FILES
#endif

#if !defined(RESNET_WITH_CUDA)
#if !defined(RESNET_NO_CUDA) && __has_include(<ATen/cuda/CUDAConfig.h>) && \
    __has_include(<cuda_runtime_api.h>)
#define RESNET_WITH_CUDA 1
#else
#define RESNET_WITH_CUDA 0
#endif
#endif

#if !defined(RESNET_WITH_C10D)
#define RESNET_WITH_C10D 0
#endif
#if !defined(RESNET_WITH_NCCL)
#define RESNET_WITH_NCCL 0
#endif
#if RESNET_WITH_C10D && !defined(USE_C10D_GLOO)
// LibTorch's CMake target defines both.
#error "RESNET_WITH_C10D needs USE_C10D_GLOO and USE_DISTRIBUTED defined"
#endif
#if RESNET_WITH_NCCL && !defined(USE_C10D_NCCL)
#error "RESNET_WITH_NCCL needs USE_C10D_NCCL defined"
#endif

#if !defined(RESNET_AUTOCAST_BY_DEVICE_TYPE)
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define RESNET_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define RESNET_AUTOCAST_BY_DEVICE_TYPE 0
#endif
#endif

#if !defined(RESNET_HAS_UINT_DTYPES)
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define RESNET_HAS_UINT_DTYPES 1
#else
#define RESNET_HAS_UINT_DTYPES 0
#endif
#endif
#if !defined(RESNET_HAS_FLOAT8)
#if __has_include(<c10/util/Float8_e4m3fn.h>)
#define RESNET_HAS_FLOAT8 1
#else
#define RESNET_HAS_FLOAT8 0
#endif
#endif
#if !defined(RESNET_HAS_FLOAT8_FNUZ)
#if __has_include(<c10/util/Float8_e4m3fnuz.h>)
#define RESNET_HAS_FLOAT8_FNUZ 1
#else
#define RESNET_HAS_FLOAT8_FNUZ 0
#endif
#endif
#if !defined(RESNET_HAS_FLOAT8_E8M0)
#if __has_include(<c10/util/Float8_e8m0fnu.h>)
#define RESNET_HAS_FLOAT8_E8M0 1
#else
#define RESNET_HAS_FLOAT8_E8M0 0
#endif
#endif
#if !defined(RESNET_HAS_FLOAT4)
#if __has_include(<c10/util/Float4_e2m1fn_x2.h>)
#define RESNET_HAS_FLOAT4 1
#else
#define RESNET_HAS_FLOAT4 0
#endif
#endif

namespace resnet {

/// Whether this build compiled the CUDA code paths.
inline constexpr bool kWithCuda = RESNET_WITH_CUDA != 0;

} // namespace resnet
