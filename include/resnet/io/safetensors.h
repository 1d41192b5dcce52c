#pragma once

// Reading and writing safetensors files (Hugging Face's format for named
// tensors): what safetensors.torch.save_file writes, read_safetensors reads,
// and what save_safetensors writes, safetensors.torch.load_file reads.

#include <resnet/io/detail/file.h>
#include <resnet/io/detail/safetensors_format.h>
#include <resnet/io/files.h>
#include <resnet/io/state_dict.h>

#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace resnet {

/// The contents of a safetensors file.
struct SafetensorsFile {
  /// The tensors, on the CPU, in the order of their data in the file.
  StateDict tensors;
  /// The header's "__metadata__" (empty if it has none).
  std::map<std::string, std::string> metadata;
};

namespace detail {

/// An empty CPU tensor for `entry`, to be filled with its bytes. Large ones
/// have their pages mapped in one call (Linux 5.14+; a hint, ignored where
/// unsupported): faulting them in one by one while copying costs more than
/// the copy.
inline torch::Tensor empty_for(const SafetensorsEntry& entry) {
  auto t = at::empty(
      entry.sizes,
      at::TensorOptions().dtype(entry.dtype->type).device(at::kCPU));
#if defined(__linux__)
  // MADV_POPULATE_WRITE, which headers before Linux 5.14 lack.
  constexpr int kPopulateWrite = 23;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto nbytes = entry.end - entry.begin;
  if (nbytes >= (uint64_t{1} << 20) && page > 0) {
    const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t first = (p + page - 1) / page * page;
    const uintptr_t last = (p + nbytes) / page * page;
    if (last > first) {
      ::madvise(reinterpret_cast<void*>(first), last - first, kPopulateWrite);
    }
  }
#endif
  return t;
}

/// The checked header of the open safetensors `file`, and where its data
/// starts; a `c10::Error` without the path.
inline std::pair<SafetensorsHeader, uint64_t> read_safetensors_header(
    ReadableFile& file) {
  check_little_endian_host();
  char first8[kSafetensorsLengthBytes] = {};
  TORCH_CHECK(
      file.size() >= kSafetensorsLengthBytes,
      "the file is ",
      file.size(),
      " bytes long, too short for the 8-byte header length");
  file.read(0, first8, kSafetensorsLengthBytes);
  const uint64_t n = safetensors_header_length(first8, file.size());
  std::string json(static_cast<size_t>(n), '\0');
  file.read(kSafetensorsLengthBytes, &json[0], n);
  const uint64_t data_start = kSafetensorsLengthBytes + n;
  return {
      parse_safetensors_header(
          json.data(), json.size(), file.size() - data_start),
      data_start};
}

/// Reads the file at `path`, raising a `c10::Error` without the path.
inline SafetensorsFile read_safetensors_or_throw(const std::string& path) {
  ReadableFile file(path);
  auto [header, data_start] = read_safetensors_header(file);
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  out.tensors.reserve(header.tensors.size());
  for (auto& entry : header.tensors) {
    auto tensor = empty_for(entry);
    file.read(
        data_start + entry.begin,
        static_cast<char*>(tensor.data_ptr()),
        entry.end - entry.begin);
    out.tensors.emplace_back(std::move(entry.name), std::move(tensor));
  }
  return out;
}

/// `read_safetensors` from the `size` bytes of a whole file at `data`
/// (copied into the tensors). Raises a `c10::Error` on malformed input.
inline SafetensorsFile parse_safetensors(const char* data, size_t size) {
  try {
    check_little_endian_host();
    TORCH_CHECK(data || size == 0, "no data");
    const uint64_t n = safetensors_header_length(data, size);
    const uint64_t data_start = kSafetensorsLengthBytes + n;
    auto header = parse_safetensors_header(
        data + kSafetensorsLengthBytes,
        static_cast<size_t>(n),
        size - data_start);
    SafetensorsFile out;
    out.metadata = std::move(header.metadata);
    out.tensors.reserve(header.tensors.size());
    for (auto& entry : header.tensors) {
      auto tensor = empty_for(entry);
      if (entry.end > entry.begin) {
        std::memcpy(
            tensor.data_ptr(),
            data + data_start + entry.begin,
            static_cast<size_t>(entry.end - entry.begin));
      }
      out.tensors.emplace_back(std::move(entry.name), std::move(tensor));
    }
    return out;
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "resnet: invalid safetensors data: ", e.msg());
  }
}

/// The bytes of a safetensors file holding `state` and `metadata`, laid out
/// as safetensors.torch.save_file lays them out (so the bytes are the same):
/// tensors ordered by dtype, widest first, then by name.
inline std::vector<char> safetensors_bytes(
    const StateDict& state,
    const std::map<std::string, std::string>& metadata) {
  check_little_endian_host();
  std::set<std::string> names;
  std::vector<SafetensorsEntry> entries;
  std::vector<torch::Tensor> data;
  entries.reserve(state.size());
  data.reserve(state.size());
  for (const auto& item : state) {
    const auto& name = item.first;
    const auto& t = item.second;
    const std::string what = "tensor '" + clipped(name) + "'";
    TORCH_CHECK(
        name != kSafetensorsMetadataKey,
        "a tensor cannot be named ",
        kSafetensorsMetadataKey);
    TORCH_CHECK(!name.empty(), "a tensor has an empty name");
    TORCH_CHECK(names.insert(name).second, what, " is given twice");
    TORCH_CHECK(t.defined(), what, " is undefined");
    TORCH_CHECK(
        t.layout() == at::kStrided,
        what,
        " has layout ",
        t.layout(),
        "; safetensors holds dense tensors only");
    SafetensorsEntry entry;
    entry.name = name;
    entry.dtype = safetensors_dtype(t.scalar_type());
    TORCH_CHECK(
        entry.dtype,
        what,
        " has dtype ",
        t.scalar_type(),
        ", which safetensors cannot hold");
    TORCH_CHECK(
        entry.dtype->bits != 4 || t.dim() > 0,
        what,
        ": a 0-dimensional F4 tensor has no safetensors shape");
    auto cpu =
        t.detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
    entry.sizes = cpu.sizes().vec();
    entries.push_back(std::move(entry));
    data.push_back(std::move(cpu));
  }

  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) {
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto& x = entries[a];
    const auto& y = entries[b];
    if (x.dtype->order != y.dtype->order) {
      return x.dtype->order > y.dtype->order;
    }
    return x.name < y.name;
  });
  std::vector<SafetensorsEntry> sorted;
  sorted.reserve(entries.size());
  uint64_t offset = 0;
  for (size_t i : order) {
    auto entry = std::move(entries[i]);
    const auto& t = data[i];
    entry.begin = offset;
    offset += static_cast<uint64_t>(t.numel()) *
        static_cast<uint64_t>(t.element_size());
    entry.end = offset;
    sorted.push_back(std::move(entry));
  }

  const std::string header = safetensors_header_text(sorted, metadata);
  std::vector<char> out(kSafetensorsLengthBytes + header.size() + offset);
  uint64_t n = header.size();
  for (size_t i = 0; i < kSafetensorsLengthBytes; ++i) {
    out[i] = static_cast<char>(n & 0xff);
    n >>= 8;
  }
  std::memcpy(
      out.data() + kSafetensorsLengthBytes, header.data(), header.size());
  char* base = out.data() + kSafetensorsLengthBytes + header.size();
  for (size_t k = 0; k < order.size(); ++k) {
    const auto& t = data[order[k]];
    const auto bytes = sorted[k].end - sorted[k].begin;
    if (bytes > 0) {
      std::memcpy(base + sorted[k].begin, t.data_ptr(), bytes);
    }
  }
  return out;
}

// `read()`, its errors rethrown naming the safetensors file at `path`.
template <typename Read>
auto naming_safetensors_file(const std::string& path, Read read) {
  try {
    return read();
  } catch (const c10::Error& e) {
    TORCH_CHECK(
        false, "resnet: cannot read safetensors file '", path, "': ", e.msg());
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false, "resnet: cannot read safetensors file '", path, "': ", e.what());
  }
}
} // namespace detail

/// The tensors and metadata of the safetensors file at `path`, each tensor
/// in its own CPU memory, read straight from the file into it. The whole
/// header is checked before any tensor is made: a `c10::Error` naming the
/// file and the problem for a malformed file (bad lengths, JSON, dtypes,
/// shapes, or data offsets that overlap, leave holes or run past the end).
inline SafetensorsFile read_safetensors(const std::string& path) {
  return detail::naming_safetensors_file(
      path, [&] { return detail::read_safetensors_or_throw(path); });
}

/// The "__metadata__" of the safetensors file at `path`, reading and
/// checking its header only (none of its tensors); a `c10::Error` naming
/// the file for one that is not a well-formed safetensors file.
inline std::map<std::string, std::string> read_safetensors_metadata(
    const std::string& path) {
  return detail::naming_safetensors_file(path, [&] {
    detail::ReadableFile file(path);
    return detail::read_safetensors_header(file).first.metadata;
  });
}

/// Writes `state` (any devices; non-contiguous tensors are fine) and
/// `metadata` to `path` as a safetensors file, atomically: readers see the
/// old file or the new one. The bytes are what safetensors.torch.save_file
/// writes for the same tensors and metadata (tensors ordered by dtype, widest
/// first, then by name); "__metadata__" is written only when `metadata` is
/// not empty. Undefined tensors, repeated names and dtypes the format lacks
/// are refused with a `c10::Error` naming the file.
inline void save_safetensors(
    const StateDict& state,
    const std::string& path,
    const std::map<std::string, std::string>& metadata = {}) {
  std::vector<char> bytes;
  try {
    bytes = detail::safetensors_bytes(state, metadata);
  } catch (const c10::Error& e) {
    TORCH_CHECK(
        false, "resnet: cannot write safetensors file '", path, "': ", e.msg());
  }
  write_file_atomically(path, bytes);
}

} // namespace resnet
