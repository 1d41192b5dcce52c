#pragma once

// The library's version, kept equal to the CMake project's.

#define RESNET_VERSION_MAJOR 0
#define RESNET_VERSION_MINOR 1
#define RESNET_VERSION_PATCH 0

namespace resnet {

/// The major version, `RESNET_VERSION_MAJOR`.
inline constexpr int kVersionMajor = RESNET_VERSION_MAJOR;
/// The minor version, `RESNET_VERSION_MINOR`.
inline constexpr int kVersionMinor = RESNET_VERSION_MINOR;
/// The patch version, `RESNET_VERSION_PATCH`.
inline constexpr int kVersionPatch = RESNET_VERSION_PATCH;
/// The version as text, "MAJOR.MINOR.PATCH".
inline constexpr const char* kVersion = "0.1.0";

} // namespace resnet
