# Repairs two traps of LibTorch's CMake package. Call after
# find_package(Torch); does nothing where neither applies.
#
# 1. TorchConfig.cmake looks for libtorch.so in the system's folders before
#    its own, so with Debian's libtorch-dev installed beside a pip wheel the
#    `torch` target points at the other LibTorch. Point it at its own.
# 2. PyPI's CUDA wheel needs CUDA libraries from its sibling nvidia/*/lib
#    folders, which libtorch_cuda.so finds at run time through its RPATH but
#    the linker does not, taking older copies from a system CUDA toolkit.
#    Point the linker at the wheel's own.
function(resnet_fix_torch_target)
  if(NOT TARGET torch OR NOT DEFINED TORCH_INSTALL_PREFIX)
    return()
  endif()
  get_property(done TARGET torch PROPERTY RESNET_TORCH_TARGET_FIXED)
  if(done)
    return()
  endif()
  set_property(TARGET torch PROPERTY RESNET_TORCH_TARGET_FIXED TRUE)

  set(own "${TORCH_INSTALL_PREFIX}/lib/${CMAKE_SHARED_LIBRARY_PREFIX}torch${CMAKE_SHARED_LIBRARY_SUFFIX}")
  get_target_property(location torch IMPORTED_LOCATION)
  if(EXISTS "${own}" AND location AND NOT location STREQUAL own)
    message(STATUS "resnet: linking ${own} instead of ${location}")
    set_target_properties(torch PROPERTIES IMPORTED_LOCATION "${own}")
  endif()

  get_filename_component(site "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
  file(GLOB dirs LIST_DIRECTORIES true "${site}/nvidia/*/lib")
  if(dirs)
    list(APPEND dirs "${TORCH_INSTALL_PREFIX}/lib")
    list(JOIN dirs ":" path)
    set_property(TARGET torch APPEND PROPERTY INTERFACE_LINK_OPTIONS
                                              "LINKER:-rpath-link,${path}")
  endif()
endfunction()
