#pragma once

// Digests of downloaded files with OpenSSL's EVP interface: SHA-256 (the
// name of torchvision's files and the ETag of the Hub's LFS files) and git's
// blob SHA-1 (the ETag of the Hub's small files).

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include <openssl/evp.h>

namespace resnet::hub::detail {

/// Lower-case hex of `size` bytes.
inline std::string to_hex(const unsigned char* bytes, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * size);
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0xf];
  }
  return out;
}

/// The hex digest of `prefix` followed by the file's bytes.
inline std::string file_digest(
    const std::string& path,
    const EVP_MD* algorithm,
    const std::string& prefix = "") {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(
      std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) {
    throw std::runtime_error(
        "resnet: cannot read " + path + " to check its digest");
  }
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context(
      EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!context || EVP_DigestInit_ex(context.get(), algorithm, nullptr) != 1 ||
      EVP_DigestUpdate(context.get(), prefix.data(), prefix.size()) != 1) {
    throw std::runtime_error("resnet: OpenSSL could not start a digest");
  }
  std::unique_ptr<unsigned char[]> buffer(new unsigned char[1 << 16]);
  size_t got = 0;
  while ((got = std::fread(buffer.get(), 1, 1 << 16, file.get())) > 0) {
    if (EVP_DigestUpdate(context.get(), buffer.get(), got) != 1) {
      throw std::runtime_error("resnet: OpenSSL could not update a digest");
    }
  }
  if (std::ferror(file.get())) {
    throw std::runtime_error(
        "resnet: reading " + path + " failed while checking its digest");
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(context.get(), digest, &length) != 1) {
    throw std::runtime_error("resnet: OpenSSL could not finish a digest");
  }
  return to_hex(digest, length);
}

/// The file's SHA-256 in hex.
inline std::string sha256_of_file(const std::string& path) {
  return file_digest(path, EVP_sha256());
}

/// The file's git blob id: SHA-1 of "blob <size>\0" and the bytes, as
/// `git hash-object` computes it.
inline std::string git_blob_sha1_of_file(
    const std::string& path,
    std::uint64_t size) {
  std::string header = "blob " + std::to_string(size);
  header += '\0';
  return file_digest(path, EVP_sha1(), header);
}

/// Whether `text` is non-empty lower- or upper-case hex.
inline bool is_hex(const std::string& text) {
  if (text.empty()) {
    return false;
  }
  for (char c : text) {
    const bool digit = c >= '0' && c <= '9';
    const bool letter = (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!digit && !letter) {
      return false;
    }
  }
  return true;
}

} // namespace resnet::hub::detail
