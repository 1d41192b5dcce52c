#pragma once

// Decoding PNG and JPEG images into tensors, with libpng and libjpeg-turbo
// (Debian: libpng-dev, libturbojpeg0-dev; link PNG::PNG and turbojpeg, e.g.
// through pkg-config's libturbojpeg). Both are long-fuzzed decoders. Not part
// of <resnet/resnet.h>: include it where images are read.

#include <resnet/io/files.h>

#include <png.h>
#include <turbojpeg.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace resnet {

/// The most pixels (width x height) an image may have unless a caller says
/// otherwise: a header can claim far more than the file holds, and decoding
/// would allocate it first.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

namespace detail {

inline bool is_png(const uint8_t* data, size_t size) {
  return size >= 8 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0;
}

inline bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff;
}

inline void check_pixels(
    int64_t w,
    int64_t h,
    int64_t max_pixels,
    const std::string& what) {
  TORCH_CHECK(
      w > 0 && h > 0 && w <= max_pixels / h,
      "resnet: image '",
      what,
      "' claims ",
      w,
      "x",
      h,
      " pixels, more than the limit of ",
      max_pixels);
}

inline torch::Tensor decode_png(
    const uint8_t* data,
    size_t size,
    int channels,
    const std::string& what,
    int64_t max_pixels) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  // png_image_free releases what libpng holds, also after a failure.
  std::unique_ptr<png_image, void (*)(png_imagep)> guard(
      &image, png_image_free);
  TORCH_CHECK(
      png_image_begin_read_from_memory(&image, data, size) != 0,
      "resnet: cannot decode PNG image '",
      what,
      "': ",
      image.message);
  check_pixels(image.width, image.height, max_pixels, what);
  const auto stored =
      image.format & (PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA);
  image.format = channels == 1 ? PNG_FORMAT_GRAY
      : channels == 3          ? PNG_FORMAT_RGB
                               : stored;
  const int c = static_cast<int>(PNG_IMAGE_PIXEL_CHANNELS(image.format));
  auto out = torch::empty(
      {static_cast<int64_t>(image.height),
       static_cast<int64_t>(image.width),
       c},
      torch::kByte);
  TORCH_CHECK(
      png_image_finish_read(
          &image, nullptr, out.data_ptr<uint8_t>(), 0, nullptr) != 0,
      "resnet: cannot decode PNG image '",
      what,
      "': ",
      image.message);
  return out.permute({2, 0, 1}).contiguous();
}

inline torch::Tensor decode_jpeg(
    const uint8_t* data,
    size_t size,
    int channels,
    const std::string& what,
    int64_t max_pixels) {
  std::unique_ptr<void, int (*)(tjhandle)> handle(
      tjInitDecompress(), tjDestroy);
  TORCH_CHECK(handle, "resnet: libjpeg-turbo failed to start");
  TORCH_CHECK(
      size <= std::numeric_limits<unsigned long>::max(),
      "resnet: image '",
      what,
      "' is too large");
  int w = 0, h = 0, subsampling = 0, colorspace = 0;
  auto* buffer = const_cast<unsigned char*>(data);
  TORCH_CHECK(
      tjDecompressHeader3(
          handle.get(), buffer, size, &w, &h, &subsampling, &colorspace) == 0,
      "resnet: cannot decode JPEG image '",
      what,
      "': ",
      tjGetErrorStr2(handle.get()));
  check_pixels(w, h, max_pixels, what);
  const bool grey = channels == 1 || (channels == 0 && colorspace == TJCS_GRAY);
  auto out = torch::empty({h, w, grey ? 1 : 3}, torch::kByte);
  // A truncated or damaged file is an error, not a partly grey picture; a
  // progressive file may have at most 500 scans (a decompression bomb has
  // millions).
  TORCH_CHECK(
      tjDecompress2(
          handle.get(),
          buffer,
          size,
          out.data_ptr<uint8_t>(),
          w,
          0,
          h,
          grey ? TJPF_GRAY : TJPF_RGB,
          TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) == 0,
      "resnet: cannot decode JPEG image '",
      what,
      "': ",
      tjGetErrorStr2(handle.get()));
  return out.permute({2, 0, 1}).contiguous();
}

} // namespace detail

/// Decodes a PNG or JPEG image held in memory as an 8-bit tensor
/// [channels, H, W]. `channels` is 3 (RGB), 1 (grey) or 0 (as stored: 1 to
/// 4, alpha included). Data of another format, a damaged or truncated file,
/// or a header claiming more than `max_pixels` pixels raises a `c10::Error`
/// naming `what`.
inline torch::Tensor decode_image(
    const uint8_t* data,
    size_t size,
    int channels = 3,
    const std::string& what = "image",
    int64_t max_pixels = kMaxImagePixels) {
  TORCH_CHECK(
      channels == 0 || channels == 1 || channels == 3,
      "resnet: decode_image supports 0 (as stored), 1 or 3 channels, got ",
      channels);
  if (detail::is_png(data, size)) {
    return detail::decode_png(data, size, channels, what, max_pixels);
  }
  if (detail::is_jpeg(data, size)) {
    return detail::decode_jpeg(data, size, channels, what, max_pixels);
  }
  TORCH_CHECK(
      false,
      "resnet: cannot decode image '",
      what,
      "': not a PNG or JPEG file (convert other formats first)");
}

/// Reads a PNG or JPEG file as an 8-bit tensor [channels, H, W]; see
/// `decode_image`. A missing or undecodable file raises a `c10::Error`
/// naming it.
inline torch::Tensor read_image(
    const std::string& path,
    int channels = 3,
    int64_t max_pixels = kMaxImagePixels) {
  std::vector<char> bytes;
  try {
    bytes = read_file(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "resnet: cannot decode image '", path, "': ", e.msg());
  }
  return decode_image(
      reinterpret_cast<const uint8_t*>(bytes.data()),
      bytes.size(),
      channels,
      path,
      max_pixels);
}

} // namespace resnet
