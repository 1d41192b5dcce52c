#pragma once

// The safetensors format's constants and element types, and which of them
// this LibTorch can hold (the newer ones only from the release that added
// each, `RESNET_HAS_*` in <resnet/config.h>).

#include <resnet/config.h>

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace resnet::detail {

/// Bytes before the header: its length as a little-endian uint64.
inline constexpr size_t kSafetensorsLengthBytes = 8;
/// The largest header accepted, as in the reference implementation.
inline constexpr uint64_t kSafetensorsMaxHeader = 100000000;
/// Dimensions a tensor may have (as in torch.save files).
inline constexpr size_t kSafetensorsMaxDims = 64;
/// The header key that holds the string -> string metadata.
inline constexpr const char* kSafetensorsMetadataKey = "__metadata__";

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
inline constexpr bool kLittleEndianHost = false;
#else
inline constexpr bool kLittleEndianHost = true;
#endif

inline void check_little_endian_host() {
  TORCH_CHECK(
      kLittleEndianHost,
      "safetensors files are little-endian; big-endian hosts are not "
      "supported");
}

/// One safetensors dtype that LibTorch can hold.
struct SafetensorsDtype {
  const char* name;
  c10::ScalarType type;
  /// Bits per element of the header's shape (4 for F4, whose LibTorch type
  /// packs two elements in a byte).
  int bits;
  /// Position in the reference's dtype enum; its writer puts larger first.
  int order;
};

/// Every dtype of the format that this LibTorch has.
inline const std::vector<SafetensorsDtype>& safetensors_dtypes() {
  using c10::ScalarType;
  static const std::vector<SafetensorsDtype> table = {
    {"BOOL", ScalarType::Bool, 8, 0},
#if RESNET_HAS_FLOAT4
    {"F4", ScalarType::Float4_e2m1fn_x2, 4, 1},
#endif
    {"U8", ScalarType::Byte, 8, 4},
    {"I8", ScalarType::Char, 8, 5},
#if RESNET_HAS_FLOAT8
    {"F8_E5M2", ScalarType::Float8_e5m2, 8, 6},
    {"F8_E4M3", ScalarType::Float8_e4m3fn, 8, 7},
#endif
#if RESNET_HAS_FLOAT8_E8M0
    {"F8_E8M0", ScalarType::Float8_e8m0fnu, 8, 8},
#endif
#if RESNET_HAS_FLOAT8_FNUZ
    {"F8_E4M3FNUZ", ScalarType::Float8_e4m3fnuz, 8, 9},
    {"F8_E5M2FNUZ", ScalarType::Float8_e5m2fnuz, 8, 10},
#endif
    {"I16", ScalarType::Short, 16, 11},
#if RESNET_HAS_UINT_DTYPES
    {"U16", ScalarType::UInt16, 16, 12},
#endif
    {"F16", ScalarType::Half, 16, 13},
    {"BF16", ScalarType::BFloat16, 16, 14},
    {"I32", ScalarType::Int, 32, 15},
#if RESNET_HAS_UINT_DTYPES
    {"U32", ScalarType::UInt32, 32, 16},
#endif
    {"F32", ScalarType::Float, 32, 17},
    {"C64", ScalarType::ComplexFloat, 64, 18},
    {"F64", ScalarType::Double, 64, 19},
    {"I64", ScalarType::Long, 64, 20},
#if RESNET_HAS_UINT_DTYPES
    {"U64", ScalarType::UInt64, 64, 21},
#endif
  };
  return table;
}

/// The format's dtype called `name`, or nullptr if this LibTorch lacks it
/// (or the format has no such dtype).
inline const SafetensorsDtype* safetensors_dtype(const std::string& name) {
  for (const auto& d : safetensors_dtypes()) {
    if (name == d.name) {
      return &d;
    }
  }
  return nullptr;
}

/// The format's dtype for `type`, or nullptr if the format has none.
inline const SafetensorsDtype* safetensors_dtype(c10::ScalarType type) {
  for (const auto& d : safetensors_dtypes()) {
    if (type == d.type) {
      return &d;
    }
  }
  return nullptr;
}

/// Whether the format (as of safetensors 0.8) defines dtype `name`.
inline bool is_safetensors_dtype_name(const std::string& name) {
  static const char* const all[] = {
      "BOOL",    "F4",      "F6_E2M3", "F6_E3M2",     "U8",          "I8",
      "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16",
      "U16",     "F16",     "BF16",    "I32",         "U32",         "F32",
      "C64",     "F64",     "I64",     "U64"};
  return std::find(std::begin(all), std::end(all), name) != std::end(all);
}

} // namespace resnet::detail
