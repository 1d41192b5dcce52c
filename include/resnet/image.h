#pragma once

// Decoding image files into tensors with stb_image (Debian: libstb-dev; link
// `stb`, e.g. through pkg-config). Not part of <resnet/resnet.h>: include it
// where images are read.

#include <stb/stb_image.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace resnet {

/// Reads a PNG, JPEG, BMP, GIF, TGA or PNM file as an 8-bit tensor
/// [channels, H, W]. `channels` is 3 (RGB), 1 (grey) or 0 (as stored). A
/// missing, truncated or undecodable file raises a `c10::Error` naming it.
inline torch::Tensor read_image(const std::string& path, int channels = 3) {
  TORCH_CHECK(
      channels == 0 || channels == 1 || channels == 3,
      "resnet: read_image supports 0 (as stored), 1 or 3 channels, got ",
      channels);
  int w = 0, h = 0, stored = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> pixels(
      stbi_load(path.c_str(), &w, &h, &stored, channels), stbi_image_free);
  TORCH_CHECK(
      pixels != nullptr,
      "resnet: cannot decode image '",
      path,
      "': ",
      stbi_failure_reason() ? stbi_failure_reason() : "unknown error");
  const int c = channels == 0 ? stored : channels;
  return torch::from_blob(
             pixels.get(),
             {h, w, c},
             torch::TensorOptions().dtype(torch::kByte))
      .permute({2, 0, 1})
      .clone();
}

} // namespace resnet
