#pragma once

// The library's version, kept equal to the CMake project's.

#define RESNET_VERSION_MAJOR 0
#define RESNET_VERSION_MINOR 1
#define RESNET_VERSION_PATCH 0

namespace resnet {

inline constexpr int kVersionMajor = RESNET_VERSION_MAJOR;
inline constexpr int kVersionMinor = RESNET_VERSION_MINOR;
inline constexpr int kVersionPatch = RESNET_VERSION_PATCH;
inline constexpr const char* kVersion = "0.1.0";

} // namespace resnet
