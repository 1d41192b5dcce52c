#pragma once

// The one zip reader of the weight readers (torch.save's and TorchScript's
// archives), over bytes in memory (a mapped file). Its directory is checked
// as a whole before any record is read, and anything another reader could
// see differently is refused: data after the end record, a central
// directory that is not where the end record says, two records of one name,
// records that overlap each other or the directory, and local headers that
// disagree with the directory. Records are stored or deflated (zlib); a
// deflated record's declared size is checked against the deflate limit and
// the caller's budget before anything inflates it, and the inflated bytes
// must be exactly that many, with the right CRC-32.

#include <resnet/io/detail/read_budget.h>

#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace resnet::detail {

/// The signature of a local file header: every zip archive starts with it.
inline constexpr char kZipLocalMagic[] = "PK\x03\x04";

/// Whether `size` bytes at `data` start like a zip archive.
inline bool has_zip_magic(const char* data, size_t size) {
  return size >= 4 && std::memcmp(data, kZipLocalMagic, 4) == 0;
}

/// One record of a zip archive, as its central directory describes it.
struct ZipEntry {
  std::string name;
  /// Where its local header starts, and its data.
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;
  /// Bytes in the archive, and once inflated.
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
  /// Stored as it is (method 0); otherwise deflated (method 8).
  bool stored = true;
};

/// A zip archive in memory, its directory read and checked.
class ZipArchive {
 public:
  /// Reads the directory of the `size` bytes at `data` (which must outlive
  /// the archive), charging `budget` for it. A `c10::Error` for anything
  /// malformed or ambiguous.
  ZipArchive(const char* data, size_t size, ReadBudget& budget)
      : data_(data), size_(size) {
    read_directory(budget);
  }

  const std::vector<ZipEntry>& entries() const {
    return entries_;
  }

  /// The record named `name` exactly, or nullptr.
  const ZipEntry* find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &entries_[it->second];
  }

  /// A stored record's bytes where they lie in the archive.
  const char* stored_data(const ZipEntry& e) const {
    TORCH_CHECK(e.stored, "zip: record '", clip(e.name), "' is compressed");
    return data_ + e.data_offset;
  }

  /// Writes the `e.size` bytes of `e` to `out`: copied, or inflated and
  /// checked.
  void read(const ZipEntry& e, char* out) const {
    if (e.stored) {
      if (e.size > 0) {
        std::memcpy(out, data_ + e.data_offset, static_cast<size_t>(e.size));
      }
      return;
    }
    inflate_into(e, out);
  }

  /// The bytes of `e` in a new buffer, charged to `budget` first.
  std::vector<char> read(const ZipEntry& e, ReadBudget& budget) const {
    budget.spend(e.size, "a zip record");
    std::vector<char> out(static_cast<size_t>(e.size));
    read(e, out.data());
    return out;
  }

  /// `name` cut short for messages.
  static std::string clip(const std::string& name) {
    return name.size() <= 120 ? name : name.substr(0, 120) + "...";
  }

 private:
  uint64_t le(uint64_t pos, size_t n, uint64_t limit) const {
    TORCH_CHECK(
        pos <= limit && n <= limit - pos,
        "zip: a header at byte ",
        pos,
        " runs past the end of its area (",
        limit,
        ")");
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos + k]))
          << (8 * k);
    }
    return v;
  }
  uint64_t le(uint64_t pos, size_t n) const {
    return le(pos, n, size_);
  }

  // The end-of-central-directory record: the one whose comment ends the
  // file. A second such record means two directories; both are refused.
  uint64_t find_end_record() const {
    TORCH_CHECK(size_ >= 22, "zip: file of ", size_, " bytes is too short");
    const uint64_t lowest = size_ >= 22 + 65535 ? size_ - 22 - 65535 : 0;
    uint64_t found = UINT64_MAX;
    for (uint64_t pos = size_ - 22 + 1; pos-- > lowest;) {
      if (le(pos, 4) == 0x06054b50 && pos + 22 + le(pos + 20, 2) == size_) {
        TORCH_CHECK(
            found == UINT64_MAX,
            "zip: two end-of-directory records (at bytes ",
            pos,
            " and ",
            found,
            "): the archive is ambiguous");
        found = pos;
      }
    }
    TORCH_CHECK(
        found != UINT64_MAX,
        "zip: no end-of-directory record at the end of the file (truncated, "
        "or data follows the archive)");
    return found;
  }

  void read_directory(ReadBudget& budget) {
    const uint64_t eocd = find_end_record();
    TORCH_CHECK(
        le(eocd + 4, 2) == 0 && le(eocd + 6, 2) == 0 &&
            le(eocd + 8, 2) == le(eocd + 10, 2),
        "zip: archives split over several disks are not supported");
    uint64_t count = le(eocd + 10, 2);
    uint64_t cd_size = le(eocd + 12, 4);
    uint64_t cd_offset = le(eocd + 16, 4);
    // Where the directory must end: at the end record, or at the zip64 end
    // record that a locator just before it points to (PyTorch's writer
    // always adds one; others do when a field overflows).
    uint64_t cd_end = eocd;
    const bool saturated =
        count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff;
    const bool has_locator = eocd >= 20 && le(eocd - 20, 4) == 0x07064b50;
    TORCH_CHECK(!saturated || has_locator, "zip: no zip64 locator");
    if (has_locator) {
      const uint64_t locator = eocd - 20;
      const uint64_t record = le(locator + 8, 8);
      TORCH_CHECK(
          record < locator && le(record, 4) == 0x06064b50,
          "zip: bad zip64 end record");
      TORCH_CHECK(
          record + 12 + le(record + 4, 8) == locator,
          "zip: the zip64 end record does not end at its locator");
      // Where the end record has a value of its own, both must agree, or
      // readers that take one or the other would see different archives.
      const uint64_t count64 = le(record + 32, 8);
      const uint64_t size64 = le(record + 40, 8);
      const uint64_t offset64 = le(record + 48, 8);
      TORCH_CHECK(
          (count == 0xffff || count == count64) &&
              (cd_size == 0xffffffff || cd_size == size64) &&
              (cd_offset == 0xffffffff || cd_offset == offset64),
          "zip: the end record and the zip64 end record disagree: the "
          "archive is ambiguous");
      count = count64;
      cd_size = size64;
      cd_offset = offset64;
      cd_end = record;
    }
    TORCH_CHECK(
        cd_offset <= cd_end && cd_size == cd_end - cd_offset,
        "zip: the central directory (",
        cd_size,
        " bytes at byte ",
        cd_offset,
        ") does not end where the end record lies (byte ",
        cd_end,
        "): a second directory, or damage");
    TORCH_CHECK(
        count <= cd_size / 46,
        "zip: ",
        count,
        " records cannot fit a directory of ",
        cd_size,
        " bytes");
    budget.spend(count * sizeof(ZipEntry), "the zip directory");
    entries_.reserve(static_cast<size_t>(count));
    by_name_.reserve(static_cast<size_t>(count));
    uint64_t p = cd_offset;
    for (uint64_t k = 0; k < count; ++k) {
      entries_.push_back(read_entry(p, cd_end, budget));
      const auto& e = entries_.back();
      TORCH_CHECK(
          by_name_.emplace(e.name, entries_.size() - 1).second,
          "zip: two records are named '",
          clip(e.name),
          "': the archive is ambiguous");
    }
    TORCH_CHECK(
        p == cd_end,
        "zip: the directory has ",
        cd_end - p,
        " bytes after its ",
        count,
        " records");
    check_no_overlap(cd_offset);
  }

  ZipEntry read_entry(uint64_t& p, uint64_t cd_end, ReadBudget& budget) const {
    TORCH_CHECK(
        le(p, 4, cd_end) == 0x02014b50,
        "zip: bad central directory entry at byte ",
        p);
    const auto flags = le(p + 8, 2, cd_end);
    const auto method = le(p + 10, 2, cd_end);
    ZipEntry e;
    e.crc32 = static_cast<uint32_t>(le(p + 16, 4, cd_end));
    e.compressed_size = le(p + 20, 4, cd_end);
    e.size = le(p + 24, 4, cd_end);
    const auto name_len = le(p + 28, 2, cd_end);
    const auto extra_len = le(p + 30, 2, cd_end);
    const auto comment_len = le(p + 32, 2, cd_end);
    e.header_offset = le(p + 42, 4, cd_end);
    const uint64_t end = p + 46 + name_len + extra_len + comment_len;
    TORCH_CHECK(end <= cd_end, "zip: a directory entry runs past its end");
    budget.spend(name_len, "the zip directory");
    e.name.assign(data_ + p + 46, static_cast<size_t>(name_len));
    // The zip64 extra field holds the sizes and offset that do not fit.
    const uint64_t extra_end = p + 46 + name_len + extra_len;
    for (uint64_t x = p + 46 + name_len; x + 4 <= extra_end;) {
      const auto id = le(x, 2, extra_end);
      const auto len = le(x + 2, 2, extra_end);
      TORCH_CHECK(
          x + 4 + len <= extra_end, "zip: extra field runs past its entry");
      if (id == 1) {
        uint64_t f = x + 4;
        for (uint64_t* v : {&e.size, &e.compressed_size, &e.header_offset}) {
          if (*v == 0xffffffff) {
            *v = le(f, 8, x + 4 + len);
            f += 8;
          }
        }
      }
      x += 4 + len;
    }
    p = end;
    TORCH_CHECK(!(flags & 1), "zip: record '", clip(e.name), "' is encrypted");
    TORCH_CHECK(
        method == 0 || method == 8,
        "zip: record '",
        clip(e.name),
        "' uses compression method ",
        method,
        " (only stored and deflated records are read)");
    e.stored = method == 0;
    // The local header must agree with the directory: same name, same
    // method.
    const uint64_t h = e.header_offset;
    TORCH_CHECK(
        le(h, 4) == 0x04034b50,
        "zip: no local header for '",
        clip(e.name),
        "' at byte ",
        h);
    const auto local_name_len = le(h + 26, 2);
    const auto local_extra_len = le(h + 28, 2);
    TORCH_CHECK(
        le(h + 8, 2) == method && local_name_len == name_len &&
            h + 30 + name_len <= size_ &&
            std::memcmp(data_ + h + 30, e.name.data(), e.name.size()) == 0,
        "zip: the local header of '",
        clip(e.name),
        "' disagrees with the directory");
    e.data_offset = h + 30 + local_name_len + local_extra_len;
    TORCH_CHECK(
        e.data_offset <= size_ && e.compressed_size <= size_ - e.data_offset,
        "zip: record '",
        clip(e.name),
        "' of ",
        e.compressed_size,
        " bytes runs past the end of the file");
    // Deflate expands at most 1032:1.
    TORCH_CHECK(
        e.stored ? e.size == e.compressed_size
                 : e.size <= e.compressed_size * 1032 + 1024,
        "zip: record '",
        clip(e.name),
        "' declares ",
        e.size,
        " bytes from ",
        e.compressed_size);
    return e;
  }

  // Every record (local header and data) before the directory, and none in
  // another's bytes.
  void check_no_overlap(uint64_t cd_offset) const {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    spans.reserve(entries_.size());
    for (const auto& e : entries_) {
      spans.emplace_back(e.header_offset, e.data_offset + e.compressed_size);
    }
    std::sort(spans.begin(), spans.end());
    uint64_t end = 0;
    for (const auto& s : spans) {
      TORCH_CHECK(
          s.first >= end,
          "zip: two records overlap (at byte ",
          s.first,
          "): the archive is ambiguous");
      end = s.second;
    }
    TORCH_CHECK(
        end <= cd_offset, "zip: a record overlaps the central directory");
  }

  void inflate_into(const ZipEntry& e, char* out) const {
    z_stream z{};
    TORCH_CHECK(inflateInit2(&z, -MAX_WBITS) == Z_OK, "zip: cannot start zlib");
    uint64_t in_left = e.compressed_size;
    uint64_t out_left = e.size;
    z.next_in =
        reinterpret_cast<Bytef*>(const_cast<char*>(data_ + e.data_offset));
    z.next_out = reinterpret_cast<Bytef*>(out);
    int rc = Z_OK;
    // zlib counts in 32 bits: feed it at most 1 GiB at a time.
    constexpr uint64_t kChunk = uint64_t{1} << 30;
    while (rc == Z_OK) {
      const auto in_now = static_cast<uInt>(std::min(in_left, kChunk));
      const auto out_now = static_cast<uInt>(std::min(out_left, kChunk));
      z.avail_in = in_now;
      z.avail_out = out_now;
      rc = ::inflate(&z, Z_NO_FLUSH);
      in_left -= in_now - z.avail_in;
      out_left -= out_now - z.avail_out;
      if (rc == Z_BUF_ERROR && (in_left == 0 || out_left == 0)) {
        break;
      }
    }
    inflateEnd(&z);
    TORCH_CHECK(
        rc == Z_STREAM_END && out_left == 0,
        "zip: record '",
        clip(e.name),
        "' does not inflate to the ",
        e.size,
        " bytes it declares (damaged)");
    uLong crc = crc32(0L, Z_NULL, 0);
    uint64_t done = 0;
    while (done < e.size) {
      const auto n = static_cast<uInt>(std::min(e.size - done, kChunk));
      crc = crc32(crc, reinterpret_cast<const Bytef*>(out + done), n);
      done += n;
    }
    TORCH_CHECK(
        static_cast<uint32_t>(crc) == e.crc32,
        "zip: record '",
        clip(e.name),
        "' fails its CRC-32 check (damaged)");
  }

  const char* data_;
  uint64_t size_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

} // namespace resnet::detail
