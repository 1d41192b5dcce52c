// The data readers: gzip, IDX, CIFAR binary records and image decoding, on
// well-formed files, on damaged ones (each refused with an error naming the
// problem) and on Debian's Fashion-MNIST where it is installed.

#include "test_support.h"

#include <resnet/data/cifar.h>
#include <resnet/data/idx.h>
#include <resnet/image.h>

#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;
using resnet_test::contains;
using resnet_test::error_of;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes gzip(const Bytes& plain) {
  z_stream z{};
  EXPECT_EQ(
      deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
      Z_OK);
  Bytes out(deflateBound(&z, plain.size()) + 32);
  z.next_in = const_cast<Bytef*>(plain.data());
  z.avail_in = static_cast<uInt>(plain.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

Bytes idx(uint8_t type, std::vector<uint32_t> dims, const Bytes& payload) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift : {24, 16, 8, 0}) {
      b.push_back(static_cast<uint8_t>(d >> shift));
    }
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

std::string idx_error(const Bytes& b) {
  return error_of([&] { resnet::data::decode_idx(b.data(), b.size(), "f"); });
}

} // namespace

TEST(Gzip, PlainBytesPassThroughAndMembersConcatenate) {
  const Bytes plain = {1, 2, 3, 4, 5};
  EXPECT_EQ(resnet::data::maybe_gunzip(plain.data(), plain.size(), "p"), plain);
  const Bytes z = gzip(plain);
  EXPECT_EQ(resnet::data::maybe_gunzip(z.data(), z.size(), "z"), plain);
  Bytes two = gzip({1, 2});
  const Bytes second = gzip({3, 4, 5});
  two.insert(two.end(), second.begin(), second.end());
  EXPECT_EQ(resnet::data::maybe_gunzip(two.data(), two.size(), "two"), plain);
}

TEST(Gzip, DamagedTruncatedOversizedAndTrailingBytesAreRefused) {
  const Bytes big(1 << 20, 7);
  Bytes z = gzip(big);
  const Bytes cut(z.begin(), z.begin() + static_cast<long>(z.size() / 2));
  EXPECT_TRUE(contains(
      error_of(
          [&] { resnet::data::maybe_gunzip(cut.data(), cut.size(), "c"); }),
      "truncated"));
  Bytes bad = z;
  bad[bad.size() - 6] ^= 0xff; // the CRC
  EXPECT_TRUE(contains(
      error_of(
          [&] { resnet::data::maybe_gunzip(bad.data(), bad.size(), "b"); }),
      "'b'"));
  // A megabyte from a kilobyte: refused at a 64 KiB limit.
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::maybe_gunzip(z.data(), z.size(), "bomb", 1 << 16);
      }),
      "more than 65536 bytes"));
  Bytes trailing = gzip({1});
  trailing.push_back(42);
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::maybe_gunzip(trailing.data(), trailing.size(), "t");
      }),
      "after the gzip stream"));
}

TEST(Idx, EveryElementTypeDecodesBigEndian) {
  const auto u8 = idx(0x08, {2, 3}, {0, 1, 2, 3, 4, 255});
  auto t = resnet::data::decode_idx(u8.data(), u8.size());
  EXPECT_EQ(t.scalar_type(), torch::kByte);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t[1][2].item<int64_t>(), 255);
  const auto i16 = idx(0x0B, {2}, {0xff, 0xfe, 0x01, 0x00});
  t = resnet::data::decode_idx(i16.data(), i16.size());
  EXPECT_EQ(t.scalar_type(), torch::kShort);
  EXPECT_EQ(t[0].item<int64_t>(), -2);
  EXPECT_EQ(t[1].item<int64_t>(), 256);
  const auto i32 = idx(0x0C, {1}, {0x80, 0, 0, 0});
  EXPECT_EQ(
      resnet::data::decode_idx(i32.data(), i32.size()).item<int64_t>(),
      INT32_MIN);
  const auto f32 = idx(0x0D, {1}, {0x3f, 0xc0, 0, 0});
  EXPECT_EQ(
      resnet::data::decode_idx(f32.data(), f32.size()).item<float>(), 1.5f);
  const auto f64 = idx(0x0E, {1}, {0xc0, 0x04, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(
      resnet::data::decode_idx(f64.data(), f64.size()).item<double>(), -2.5);
  const auto i8 = idx(0x09, {1}, {0x80});
  EXPECT_EQ(
      resnet::data::decode_idx(i8.data(), i8.size()).item<int64_t>(), -128);
}

TEST(Idx, MalformedHeadersAreRefused) {
  EXPECT_TRUE(contains(idx_error({1, 2, 3}), "not an IDX file"));
  EXPECT_TRUE(contains(idx_error({0, 0, 0x07, 1, 0, 0, 0, 1, 9}), "type 0x7"));
  EXPECT_TRUE(contains(idx_error({0, 0, 0x08, 0}), "rank 0"));
  EXPECT_TRUE(contains(idx_error({0, 0, 0x08, 2, 0, 0, 0, 1}), "ends inside"));
  EXPECT_TRUE(contains(idx_error(idx(0x08, {2, 2}, {1, 2, 3})), "3 bytes"));
  EXPECT_TRUE(contains(idx_error(idx(0x08, {2}, {1, 2, 3})), "3 bytes"));
  // Dimensions whose product overflows 64 bits must not wrap around to the
  // file's size.
  EXPECT_TRUE(contains(
      idx_error(idx(0x08, {0xffffffff, 0xffffffff, 0xffffffff}, {})),
      "the IDX header says"));
  EXPECT_TRUE(contains(
      idx_error(idx(0x0E, {0x20000000, 0x8}, {})), "the IDX header says"));
}

TEST(Idx, ZeroSizedArraysDecode) {
  // Found by fuzz_idx: an empty array must not copy from a null pointer.
  const auto b = idx(0x08, {5, 0}, {});
  const auto t = resnet::data::decode_idx(b.data(), b.size());
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{5, 0}));
}

TEST(Idx, DebiansFashionMnistReads) {
  const fs::path dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir / "t10k-labels-idx1-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  const auto labels =
      resnet::data::read_idx((dir / "t10k-labels-idx1-ubyte.gz").string());
  ASSERT_EQ(labels.sizes(), (std::vector<int64_t>{10000}));
  // The test set has 1000 items of each of the 10 classes.
  const auto counts = torch::bincount(labels.to(torch::kLong));
  EXPECT_TRUE(torch::equal(counts, torch::full({10}, 1000, torch::kLong)));
  const auto images =
      resnet::data::read_idx((dir / "t10k-images-idx3-ubyte.gz").string());
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(images.scalar_type(), torch::kByte);
}

TEST(Cifar, RecordsDecodeAndBadLabelsAreNamed) {
  Bytes ten, hundred;
  for (uint8_t i = 0; i < 3; ++i) {
    ten.push_back(i);
    hundred.push_back(i);
    hundred.push_back(static_cast<uint8_t>(90 + i));
    for (int p = 0; p < 3072; ++p) {
      ten.push_back(static_cast<uint8_t>(p / 1024 + i));
      hundred.push_back(static_cast<uint8_t>(p / 1024 + i));
    }
  }
  const auto a = resnet::data::decode_cifar(
      ten.data(), ten.size(), resnet::data::Cifar::Ten);
  EXPECT_EQ(a.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(a.targets[2].item<int64_t>(), 2);
  // Planes: red, then green, then blue.
  EXPECT_EQ(a.images[1][2][0][0].item<int64_t>(), 3);
  const auto b = resnet::data::decode_cifar(
      hundred.data(), hundred.size(), resnet::data::Cifar::Hundred);
  EXPECT_EQ(b.targets[1].item<int64_t>(), 91);
  // CIFAR-100 records read as CIFAR-10: sizes do not divide.
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::decode_cifar(
            hundred.data(), hundred.size(), resnet::data::Cifar::Ten, "h");
      }),
      "records of 3073 bytes"));
  ten[0] = 10;
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::decode_cifar(
            ten.data(), ten.size(), resnet::data::Cifar::Ten, "t");
      }),
      "label 10"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::decode_cifar(
            ten.data(), 0, resnet::data::Cifar::Ten, "e");
      }),
      "found 0 bytes"));
}

namespace {

// A 3x2 RGB picture: red, green, blue / white, black, grey.
const Bytes kPixels =
    {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 128, 128, 128};

Bytes png_of(const Bytes& rgb, int w, int h) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(w);
  image.height = static_cast<png_uint_32>(h);
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  EXPECT_NE(
      png_image_write_to_memory(
          &image, nullptr, &size, 0, rgb.data(), 0, nullptr),
      0);
  Bytes out(size);
  EXPECT_NE(
      png_image_write_to_memory(
          &image, out.data(), &size, 0, rgb.data(), 0, nullptr),
      0);
  out.resize(size);
  return out;
}

Bytes jpeg_of(const Bytes& rgb, int w, int h) {
  tjhandle tj = tjInitCompress();
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(
      tjCompress2(
          tj, rgb.data(), w, 0, h, TJPF_RGB, &buffer, &size, TJSAMP_444, 95, 0),
      0);
  Bytes out(buffer, buffer + size);
  tjFree(buffer);
  tjDestroy(tj);
  return out;
}

std::string image_error(const Bytes& b, const std::string& what = "x") {
  return error_of([&] { resnet::decode_image(b.data(), b.size(), 3, what); });
}

} // namespace

TEST(Image, PngAndJpegDecodeInEveryChannelMode) {
  const auto png = png_of(kPixels, 3, 2);
  const auto rgb = resnet::decode_image(png.data(), png.size(), 3);
  EXPECT_EQ(rgb.sizes(), (std::vector<int64_t>{3, 2, 3}));
  // [C, H, W]: the top-left pixel is red, the top-middle green.
  EXPECT_EQ(rgb[0][0][0].item<int64_t>(), 255);
  EXPECT_EQ(rgb[1][0][1].item<int64_t>(), 255);
  EXPECT_EQ(rgb[2][1][2].item<int64_t>(), 128);
  EXPECT_TRUE(
      torch::equal(resnet::decode_image(png.data(), png.size(), 0), rgb));
  const auto grey = resnet::decode_image(png.data(), png.size(), 1);
  EXPECT_EQ(grey.sizes(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(grey[0][1][0].item<int64_t>(), 255);
  const auto jpeg = jpeg_of(kPixels, 3, 2);
  const auto decoded = resnet::decode_image(jpeg.data(), jpeg.size(), 3);
  EXPECT_EQ(decoded.sizes(), (std::vector<int64_t>{3, 2, 3}));
  // Lossy, but close.
  EXPECT_LT(
      (decoded.to(torch::kInt) - rgb.to(torch::kInt)).abs().max().item<int>(),
      40);
  EXPECT_EQ(resnet::decode_image(jpeg.data(), jpeg.size(), 1).size(0), 1);
}

TEST(Image, DamagedTruncatedForeignAndHugeImagesAreRefused) {
  Bytes big(64 * 64 * 3);
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<uint8_t>(i * 7);
  }
  for (const auto& encoded : {png_of(big, 64, 64), jpeg_of(big, 64, 64)}) {
    const Bytes cut(encoded.begin(), encoded.begin() + encoded.size() / 2);
    EXPECT_TRUE(contains(image_error(cut, "cut"), "cannot decode")) << "cut";
    Bytes damaged = encoded;
    for (size_t i = encoded.size() / 3; i < encoded.size() / 3 + 16; ++i) {
      damaged[i] ^= 0x5a;
    }
    // Damage in a PNG breaks a checksum; in a JPEG's entropy-coded data it
    // may decode to other pixels, but never crashes.
    const auto msg = image_error(damaged, "damaged");
    EXPECT_TRUE(msg.empty() || contains(msg, "'damaged'")) << msg;
  }
  EXPECT_EQ(image_error(png_of(big, 64, 64)), ""); // the intact file
  const std::string ppm = "P6\n2 1\n255\n\xff\x00\x00\x00\x00\xff";
  EXPECT_TRUE(contains(
      image_error(Bytes(ppm.begin(), ppm.end()), "p"), "not a PNG or JPEG"));
  EXPECT_TRUE(contains(image_error({}, "e"), "not a PNG or JPEG"));
  // A header claiming more pixels than allowed is refused before decoding.
  const auto png = png_of(big, 64, 64);
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::decode_image(png.data(), png.size(), 3, "h", 64 * 63);
      }),
      "more than the limit of 4032"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::decode_image(png.data(), png.size(), 2); }),
      "channels"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::read_image("/no/such/image.png"); }),
      "cannot decode image '/no/such/image.png'"));
}

namespace {

std::vector<fs::path> saved_inputs(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"seeds", "regressions"}) {
    const auto dir = fs::path(RESNET_SOURCE_DIR) / "fuzz" / kind / target;
    if (fs::is_directory(dir)) {
      for (const auto& e : fs::directory_iterator(dir)) {
        files.push_back(e.path());
      }
    }
  }
  return files;
}

Bytes file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Runs `f` on every seed and regression input of a fuzz target: each gives a
// value or a c10::Error, in this build too (and in the sanitizer build).
template <class F>
void replay(const std::string& target, size_t at_least, F&& f) {
  const auto files = saved_inputs(target);
  EXPECT_GE(files.size(), at_least) << target;
  for (const auto& path : files) {
    const auto bytes = file_bytes(path);
    try {
      f(bytes);
    } catch (const c10::Error&) {
    }
  }
}

} // namespace

TEST(FuzzInputs, SeedsAndRegressionsReplayWithoutCrashing) {
  replay("idx", 11, [](const Bytes& b) {
    const auto plain = resnet::data::maybe_gunzip(b.data(), b.size(), "f");
    resnet::data::decode_idx(plain.data(), plain.size());
  });
  replay("cifar", 3, [](const Bytes& b) {
    const auto plain = resnet::data::maybe_gunzip(b.data(), b.size(), "f");
    resnet::data::decode_cifar(
        plain.data(), plain.size(), resnet::data::Cifar::Ten);
  });
  replay("image", 17, [](const Bytes& b) {
    resnet::decode_image(b.data(), b.size(), 3);
  });
  replay("pickle", 21, [](const Bytes& b) {
    resnet::detail::unpickle(reinterpret_cast<const char*>(b.data()), b.size());
  });
  replay("torch_save", 6, [](const Bytes& b) {
    resnet::StateDict state;
    resnet::detail::find_state_dict(
        resnet::detail::read_torch_save_bytes(
            reinterpret_cast<const char*>(b.data()), b.size()),
        "",
        state);
  });
  replay("safetensors", 2, [](const Bytes& b) {
    resnet::detail::parse_safetensors(
        reinterpret_cast<const char*>(b.data()), b.size());
  });
}

TEST(FuzzInputs, RealSeedsDecodeToWhatTheyHold) {
  // The seeds are real files: the PNG and JPEG ones decode, the torch.save
  // state dict has its eight tensors.
  const auto seeds = fs::path(RESNET_SOURCE_DIR) / "fuzz" / "seeds";
  for (const char* name :
       {"rgb.png",
        "grey.png",
        "rgba.png",
        "palette.png",
        "interlaced.png",
        "16bit.png",
        "baseline.jpg",
        "progressive.jpg",
        "grey.jpg"}) {
    const auto b = file_bytes(seeds / "image" / name);
    EXPECT_EQ(
        resnet::decode_image(b.data(), b.size(), 3).sizes(),
        (std::vector<int64_t>{3, 5, 7}))
        << name;
  }
  const auto state = resnet::read_state_dict(
      (seeds / "torch_save" / "state_dict.pt").string());
  EXPECT_EQ(state.size(), 8u);
}
