// The data readers: gzip, IDX, CIFAR binary records and image decoding, on
// well-formed files, on damaged ones (each refused with an error naming the
// problem) and on Debian's Fashion-MNIST where it is installed; and the
// datasets built on them (include/resnet/data/datasets.h).

#include "test_support.h"

#include <resnet/data/cifar.h>
#include <resnet/data/datasets.h>
#include <resnet/data/idx.h>
#include <resnet/data/image.h>

#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <cstring>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_data {

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

// ---------------------------------------------------------------- datasets --
// include/resnet/data/datasets.h: in-memory datasets over the readers above,
// on files the tests write and on Debian's Fashion-MNIST.

namespace {

namespace rd = resnet::data;
using rd::Split;

const fs::path kFashion = "/usr/share/datasets/fashion-mnist";

bool have_fashion() {
  for (const char* f :
       {"train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"}) {
    if (!fs::exists(kFashion / f)) {
      return false;
    }
  }
  return true;
}

void write_file(const fs::path& path, const Bytes& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  ASSERT_TRUE(out.good()) << path;
}

void write_text(const fs::path& path, const std::string& text) {
  write_file(path, Bytes(text.begin(), text.end()));
}

// MNIST-layout files of a split ("train" or "t10k"): images 4x3 whose
// pixels are all 10 * index, and `labels`; spelt train-images-idx3-ubyte or
// (dotted) train-images.idx3-ubyte, gzipped or not.
void write_idx_split(
    const fs::path& dir,
    const std::string& prefix,
    const Bytes& labels,
    bool dotted,
    bool gz) {
  const auto n = static_cast<uint32_t>(labels.size());
  Bytes pixels;
  for (uint32_t i = 0; i < n; ++i) {
    pixels.insert(pixels.end(), 12, static_cast<uint8_t>(10 * i));
  }
  const std::string sep = dotted ? "." : "-";
  const std::string gz_suffix = gz ? ".gz" : "";
  const auto images = idx(0x08, {n, 4, 3}, pixels);
  const auto label_file = idx(0x08, {n}, labels);
  write_file(
      dir / (prefix + "-images" + sep + "idx3-ubyte" + gz_suffix),
      gz ? gzip(images) : images);
  write_file(
      dir / (prefix + "-labels" + sep + "idx1-ubyte" + gz_suffix),
      gz ? gzip(label_file) : label_file);
}

// CIFAR binary records: record i has label labels[i] (CIFAR-100: coarse
// label labels[i] / 5, then the fine one) and planes of value base + i
// (red), + 50 (green), + 100 (blue).
Bytes cifar_records(rd::Cifar kind, const Bytes& labels, int base) {
  Bytes out;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (kind == rd::Cifar::Hundred) {
      out.push_back(static_cast<uint8_t>(labels[i] / 5));
    }
    out.push_back(labels[i]);
    for (int c = 0; c < 3; ++c) {
      out.insert(out.end(), 1024, static_cast<uint8_t>(base + i + 50 * c));
    }
  }
  return out;
}

Bytes solid_png(int w, int h, uint8_t value) {
  return png_of(Bytes(static_cast<size_t>(w * h * 3), value), w, h);
}

// w x h, every channel of column x holding 10 * x.
Bytes columns_png(int w, int h) {
  Bytes rgb;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      rgb.insert(rgb.end(), 3, static_cast<uint8_t>(10 * x));
    }
  }
  return png_of(rgb, w, h);
}

Bytes grey_png(int w, int h, uint8_t value) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(w);
  image.height = static_cast<png_uint_32>(h);
  image.format = PNG_FORMAT_GRAY;
  const Bytes grey(static_cast<size_t>(w * h), value);
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&image, nullptr, &size, 0, grey.data(), 0, nullptr);
  Bytes out(size);
  EXPECT_NE(
      png_image_write_to_memory(
          &image, out.data(), &size, 0, grey.data(), 0, nullptr),
      0);
  out.resize(size);
  return out;
}

std::vector<int64_t> targets_of(const rd::ImageDataset& d) {
  const auto t = d.targets();
  return std::vector<int64_t>(
      t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

// The top-left value of the first channel of each image.
std::vector<int64_t> corners(const rd::ImageDataset& d) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < d.images().size(0); ++i) {
    out.push_back(d.images()[i][0][0][0].item<int64_t>());
  }
  return out;
}

std::vector<std::string> numbered(int n, const std::string& prefix = "") {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(prefix + std::to_string(i));
  }
  return out;
}

} // namespace

TEST(Datasets, ImageDatasetChecksItsInputs) {
  const auto images = torch::zeros({3, 1, 2, 2}, torch::kByte);
  const auto targets = torch::tensor({0, 1, 1}, torch::kLong);
  const std::vector<std::string> two = {"a", "b"};
  const auto error =
      [](torch::Tensor i, torch::Tensor t, std::vector<std::string> c) {
        return error_of([&] { rd::ImageDataset(i, t, c, "toy"); });
      };
  EXPECT_TRUE(contains(
      error(images.to(torch::kFloat), targets, two),
      "dataset 'toy': expected images uint8 [N, C, H, W], got Float "
      "[3, 1, 2, 2]"));
  EXPECT_TRUE(contains(error(images[0], targets, two), "got Byte [1, 2, 2]"));
  EXPECT_TRUE(
      contains(error(torch::Tensor(), targets, two), "an undefined tensor"));
  EXPECT_TRUE(contains(
      error(images, torch::tensor({0, 1}, torch::kLong), two),
      "expected integer targets [3], got Long [2]"));
  EXPECT_TRUE(
      contains(error(images, targets.to(torch::kFloat), two), "got Float [3]"));
  EXPECT_TRUE(contains(
      error(images, torch::tensor({0, 2, 1}, torch::kLong), two),
      "dataset 'toy': expected labels in [0, 2), got 2"));
  EXPECT_TRUE(contains(
      error(images, torch::tensor({0, -1, 1}, torch::kLong), two), "got -1"));
  EXPECT_TRUE(
      contains(error(images, targets, {}), "expected at least one class"));
  EXPECT_EQ(error(images, targets.to(torch::kByte), two), "");
}

TEST(Datasets, ImageDatasetGetSizeAndHead) {
  const auto images = torch::arange(4 * 2 * 3 * 5, torch::kLong)
                          .to(torch::kByte)
                          .reshape({4, 2, 3, 5});
  // The same values in a non-contiguous layout: stored contiguous.
  const auto strided = images.transpose(2, 3).contiguous().transpose(2, 3);
  ASSERT_FALSE(strided.is_contiguous());
  rd::ImageDataset d(
      strided,
      torch::tensor({2, 0, 1, 2}, torch::kByte),
      {"x", "y", "z"},
      "toy");
  EXPECT_TRUE(d.images().is_contiguous());
  EXPECT_TRUE(torch::equal(d.images(), images));
  EXPECT_EQ(d.targets().scalar_type(), torch::kLong);
  EXPECT_EQ(d.size().value(), 4u);
  EXPECT_EQ(d.channels(), 2);
  EXPECT_EQ(d.height(), 3);
  EXPECT_EQ(d.width(), 5);
  EXPECT_EQ(d.name(), "toy");
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"x", "y", "z"}));
  const auto e = d.get(3);
  EXPECT_TRUE(torch::equal(e.data, images[3]));
  EXPECT_EQ(e.target.dim(), 0);
  EXPECT_EQ(e.target.scalar_type(), torch::kLong);
  EXPECT_EQ(e.target.item<int64_t>(), 2);
  EXPECT_TRUE(contains(
      error_of([&] { d.get(4); }),
      "dataset 'toy': index 4 out of range for 4 examples"));
  const auto h = d.head(2);
  EXPECT_EQ(h.size().value(), 2u);
  EXPECT_TRUE(torch::equal(h.images(), images.slice(0, 0, 2)));
  EXPECT_EQ(targets_of(h), (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(h.classes(), d.classes());
  EXPECT_EQ(h.name(), "toy");
  for (int64_t n : {0, -1, 4, 9}) {
    EXPECT_EQ(d.head(n).size().value(), 4u) << n;
  }
  // Shards: consecutive, sizes within one, every example once.
  for (int64_t parts : {1, 3, 4, 6}) {
    std::vector<int64_t> seen;
    for (int64_t part = 0; part < parts; ++part) {
      const auto s = d.shard(part, parts);
      EXPECT_EQ(s.size().value(), (4 * (part + 1) / parts) - 4 * part / parts);
      EXPECT_EQ(s.classes(), d.classes());
      const auto t = targets_of(s);
      seen.insert(seen.end(), t.begin(), t.end());
    }
    EXPECT_EQ(seen, targets_of(d)) << parts;
  }
  EXPECT_TRUE(torch::equal(d.shard(1, 2).images(), images.slice(0, 2, 4)));
  for (auto [part, parts] : {std::pair{2, 2}, {-1, 2}, {0, 0}}) {
    EXPECT_TRUE(contains(
        error_of([&] { d.shard(part, parts); }),
        "ImageDataset::shard expects 0 <= part < parts"));
  }
  // A torch::data dataset: batches stack.
  auto stacked = d.map(torch::data::transforms::Stack<>());
  const auto batch = stacked.get_batch({1, 3});
  EXPECT_EQ(batch.data.sizes(), (std::vector<int64_t>{2, 2, 3, 5}));
  EXPECT_EQ(batch.target.sizes(), (std::vector<int64_t>{2}));
  EXPECT_EQ(batch.target[1].item<int64_t>(), 2);
  const rd::ImageDataset empty;
  EXPECT_EQ(empty.size().value(), 0u);
  EXPECT_EQ(empty.channels(), 0);
}

TEST(Datasets, ClassNamesOfKnownKinds) {
  const auto& fashion = rd::class_names("fashion-mnist");
  ASSERT_EQ(fashion.size(), 10u);
  EXPECT_EQ(fashion[0], "T-shirt/top");
  EXPECT_EQ(fashion[9], "Ankle boot");
  EXPECT_EQ(rd::class_names("mnist"), numbered(10));
  EXPECT_EQ(rd::class_names("kmnist").size(), 10u);
  EXPECT_EQ(rd::class_names("kmnist")[0], "o");
  const auto& ten = rd::class_names("cifar10");
  ASSERT_EQ(ten.size(), 10u);
  EXPECT_EQ(ten[0], "airplane");
  EXPECT_EQ(ten[9], "truck");
  // CIFAR-100's fine labels are numbered in alphabetical order.
  const auto& hundred = rd::class_names("cifar100");
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_TRUE(std::is_sorted(hundred.begin(), hundred.end()));
  EXPECT_EQ(std::adjacent_find(hundred.begin(), hundred.end()), hundred.end());
  EXPECT_EQ(hundred[0], "apple");
  EXPECT_EQ(hundred[1], "aquarium_fish");
  EXPECT_EQ(hundred[99], "worm");
  EXPECT_TRUE(contains(
      error_of([] { rd::class_names("folder"); }),
      "no class names for 'folder'"));
}

TEST(Datasets, IdxDatasetReadsBothSpellingsPlainAndGzipped) {
  const auto dir = resnet_test::work_dir("datasets/idx");
  write_idx_split(dir, "train", {3, 1, 4, 1, 5}, false, false);
  write_idx_split(dir, "t10k", {2, 7}, true, true);
  // Five images are too few to tell the kind: "idx", classes "0" to "5".
  const rd::IdxDataset train(dir.string(), Split::Train);
  EXPECT_EQ(train.name(), "idx");
  EXPECT_EQ(train.images().sizes(), (std::vector<int64_t>{5, 1, 4, 3}));
  EXPECT_EQ(targets_of(train), (std::vector<int64_t>{3, 1, 4, 1, 5}));
  EXPECT_EQ(train.classes(), numbered(6));
  EXPECT_EQ(corners(train), (std::vector<int64_t>{0, 10, 20, 30, 40}));
  EXPECT_EQ(train.images()[2].max().item<int64_t>(), 20);
  const rd::IdxDataset test(dir.string(), Split::Test, "mnist");
  EXPECT_EQ(test.name(), "mnist");
  EXPECT_EQ(targets_of(test), (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(test.classes(), rd::class_names("mnist"));
  EXPECT_EQ(
      rd::IdxDataset(dir.string(), Split::Test, "idx").classes(), numbered(8));
  const rd::IdxDataset files(
      (dir / "train-images-idx3-ubyte").string(),
      (dir / "train-labels-idx1-ubyte").string(),
      numbered(6, "c"),
      "mine");
  EXPECT_EQ(files.name(), "mine");
  EXPECT_EQ(files.classes()[5], "c5");
  EXPECT_TRUE(torch::equal(files.images(), train.images()));
}

TEST(Datasets, IdxDatasetErrorsNameTheFiles) {
  const auto dir = resnet_test::work_dir("datasets/idx_errors");
  EXPECT_TRUE(contains(
      error_of([&] { rd::IdxDataset(dir.string(), Split::Train); }),
      "expected train-images-idx3-ubyte[.gz] or train-images.idx3-ubyte[.gz] "
      "in '" +
          dir.string() + "', found none"));
  write_idx_split(dir, "train", {0, 12}, false, true);
  const auto labels = (dir / "train-labels-idx1-ubyte.gz").string();
  EXPECT_TRUE(contains(
      error_of([&] { rd::IdxDataset(dir.string(), Split::Train, "mnist"); }),
      "'" + labels + "': expected labels in [0, 10), got 12"));
  EXPECT_EQ(
      rd::IdxDataset(dir.string(), Split::Train, "idx").classes().size(), 13u);
  EXPECT_TRUE(contains(
      error_of([&] { rd::IdxDataset(dir.string(), Split::Train, "emnist"); }),
      "unknown IDX dataset kind 'emnist'"));
  // The labels file as images: not 8-bit images [N, H, W].
  EXPECT_TRUE(contains(
      error_of([&] { rd::IdxDataset(labels, labels, {"a"}, "x"); }),
      "'" + labels + "': expected 8-bit images [N, H, W], got Byte [2]"));
  // Three labels for two images.
  write_idx_split(dir, "t10k", {1, 2}, false, false);
  write_file(dir / "t10k-labels-idx1-ubyte", idx(0x08, {3}, {1, 2, 3}));
  EXPECT_TRUE(contains(
      error_of([&] { rd::IdxDataset(dir.string(), Split::Test); }),
      "expected 2 integer labels to match"));
}

TEST(Datasets, FashionMnistIsToldByItsPixels) {
  if (!have_fashion()) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  const rd::IdxDataset train(kFashion.string(), Split::Train);
  EXPECT_EQ(train.name(), "fashion-mnist");
  EXPECT_EQ(train.images().sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(train.classes(), rd::class_names("fashion-mnist"));
  EXPECT_EQ(rd::idx_kind(train.images()), "fashion-mnist");
  const rd::IdxDataset test(kFashion.string(), Split::Test);
  EXPECT_EQ(test.name(), "fashion-mnist");
  EXPECT_EQ(test.size().value(), 10000u);
  EXPECT_EQ(rd::idx_kind(test.images().squeeze(1)), "fashion-mnist");
  // The labels as the file holds them: 1000 of each class.
  EXPECT_TRUE(torch::equal(
      test.targets(),
      rd::read_idx((kFashion / "t10k-labels-idx1-ubyte.gz").string())
          .to(torch::kLong)));
  EXPECT_TRUE(torch::equal(
      torch::bincount(test.targets()), torch::full({10}, 1000, torch::kLong)));
  // Too few images to tell; negatives; another size.
  EXPECT_EQ(rd::idx_kind(test.images().slice(0, 0, 999)), "");
  EXPECT_EQ(rd::idx_kind(255 - test.images()), "");
  EXPECT_EQ(
      rd::idx_kind(torch::constant_pad_nd(test.images(), {2, 2, 2, 2})), "");
}

TEST(Datasets, FashionMnistInAFolderOfAnyNameIsGuessedByContent) {
  if (!have_fashion()) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  const auto dir = resnet_test::work_dir("datasets/plain-idx-files");
  for (const auto& e : fs::directory_iterator(kFashion)) {
    fs::create_symlink(e.path(), dir / e.path().filename());
  }
  const auto guess = rd::guess_dataset(dir.string());
  EXPECT_EQ(guess.kind, "fashion-mnist");
  EXPECT_EQ(guess.reason, "IDX files, pixel statistics of Fashion-MNIST");
  const auto both = rd::open_dataset(dir.string());
  EXPECT_EQ(both.kind, "fashion-mnist");
  EXPECT_EQ(both.guess_reason, guess.reason);
  EXPECT_EQ(both.train.size().value(), 60000u);
  EXPECT_EQ(both.test.size().value(), 10000u);
  EXPECT_EQ(both.test.classes(), rd::class_names("fashion-mnist"));
  EXPECT_EQ(
      both.describe(),
      "fashion-mnist: 60000 train, 10000 test, 1x28x28, 10 classes\n"
      "  told from the files: " +
          guess.reason);
  EXPECT_TRUE(rd::flips_keep_class(both.kind));
  for (const auto* kind : {"mnist", "kmnist", "idx"}) {
    EXPECT_FALSE(rd::flips_keep_class(kind)) << kind;
  }
  for (const auto* kind : {"cifar10", "cifar100", "folder"}) {
    EXPECT_TRUE(rd::flips_keep_class(kind)) << kind;
  }
}

namespace {

// n images of 28x28 whose pixels are `ink` pixels at 255, `grey` pixels at
// `level` and zeros, in random places.
torch::Tensor shuffled_pixels(int n, int ink, int grey, uint8_t level) {
  std::mt19937 rng(7);
  auto out = torch::zeros({n, 28, 28}, torch::kByte);
  auto* p = out.data_ptr<uint8_t>();
  for (int i = 0; i < n; ++i) {
    uint8_t* image = p + i * 784;
    std::fill(image, image + ink, uint8_t{255});
    std::fill(image + ink, image + ink + grey, level);
    std::shuffle(image, image + 784, rng);
  }
  return out;
}

// Digit-like images: white horizontal and vertical strokes two pixels wide
// on black, with `ink` pixels in all.
torch::Tensor strokes(int n, int ink) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> at(4, 22), length(5, 14), coin(0, 1);
  auto out = torch::zeros({n, 28, 28}, torch::kByte);
  auto* p = out.data_ptr<uint8_t>();
  for (int i = 0; i < n; ++i) {
    uint8_t* image = p + i * 784;
    int count = 0;
    while (count < ink) {
      const int r = at(rng), c = at(rng), len = length(rng);
      const bool across = coin(rng) == 1;
      for (int k = 0; k < len && count < ink; ++k) {
        for (int w = 0; w < 2 && count < ink; ++w) {
          const int y = across ? r + w : std::min(r + k, 27);
          const int x = across ? std::min(c + k, 27) : c + w;
          if (image[y * 28 + x] == 0) {
            image[y * 28 + x] = 255;
            ++count;
          }
        }
      }
    }
  }
  return out;
}

} // namespace

TEST(Datasets, IdxKindIsConservative) {
  // Strokes with MNIST's mean (0.1307): the mean alone would say MNIST, the
  // spread of the pixels does not.
  const auto digits = strokes(2000, 102);
  EXPECT_NEAR(digits.to(torch::kFloat).mean().item<double>() / 255, 0.13, 0.01);
  EXPECT_EQ(rd::idx_kind(digits), "");
  EXPECT_EQ(rd::idx_kind(digits.unsqueeze(1)), "");
  // Soft edges: the strokes blurred.
  const auto soft =
      torch::avg_pool2d(digits.unsqueeze(1).to(torch::kFloat), 3, 1, 1)
          .round()
          .to(torch::kByte);
  EXPECT_EQ(rd::idx_kind(soft), "");
  // Noise, black, and a flat grey with Fashion-MNIST's mean.
  EXPECT_EQ(
      rd::idx_kind(torch::randint(0, 256, {2000, 28, 28}).to(torch::kByte)),
      "");
  EXPECT_EQ(rd::idx_kind(torch::zeros({2000, 28, 28}, torch::kByte)), "");
  EXPECT_EQ(rd::idx_kind(torch::full({2000, 28, 28}, 73, torch::kByte)), "");
  // Not 8-bit, another size, another layout, undefined.
  EXPECT_EQ(rd::idx_kind(digits.to(torch::kFloat)), "");
  EXPECT_EQ(rd::idx_kind(torch::constant_pad_nd(digits, {2, 2, 2, 2})), "");
  EXPECT_EQ(rd::idx_kind(digits.unsqueeze(1).expand({2000, 3, 28, 28})), "");
  EXPECT_EQ(rd::idx_kind(torch::Tensor()), "");
  // The published statistics themselves are recognised. MNIST: mean 0.1307,
  // std 0.3081, 81% zeros; KMNIST: mean 0.1918, std 0.3483.
  const auto mnist_like = shuffled_pixels(2000, 81, 68, 80);
  EXPECT_EQ(rd::idx_kind(mnist_like), "mnist");
  EXPECT_EQ(rd::idx_kind(mnist_like.slice(0, 0, 999)), "");
  EXPECT_EQ(rd::idx_kind(shuffled_pixels(2000, 112, 123, 79)), "kmnist");
}

TEST(Datasets, CifarTenFromItsFolderOrItsParent) {
  const auto root = resnet_test::work_dir("datasets/cifar10");
  const auto dir = root / "cifar-10-batches-bin";
  const auto ten = rd::Cifar::Ten;
  write_file(dir / "data_batch_1.bin", cifar_records(ten, {0, 1}, 0));
  write_file(dir / "data_batch_2.bin.gz", gzip(cifar_records(ten, {2, 3}, 10)));
  write_file(dir / "test_batch.bin", cifar_records(ten, {9}, 100));
  const rd::CifarDataset train(root.string(), Split::Train);
  EXPECT_EQ(train.name(), "cifar10");
  EXPECT_EQ(train.images().sizes(), (std::vector<int64_t>{4, 3, 32, 32}));
  EXPECT_EQ(targets_of(train), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(corners(train), (std::vector<int64_t>{0, 1, 10, 11}));
  EXPECT_EQ(train.images()[2][1][5][5].item<int64_t>(), 60);
  EXPECT_EQ(train.classes(), rd::class_names("cifar10"));
  const rd::CifarDataset test(dir.string(), Split::Test, ten);
  EXPECT_EQ(targets_of(test), (std::vector<int64_t>{9}));
  EXPECT_EQ(test.images()[0][2][31][31].item<int64_t>(), 200);
  // batches.meta.txt names the classes, one a line.
  std::string meta;
  for (const auto& name : numbered(10, "c")) {
    meta += name + "\n";
  }
  write_text(dir / "batches.meta.txt", meta + "\n\n");
  EXPECT_EQ(
      rd::CifarDataset(root.string(), Split::Test).classes(),
      numbered(10, "c"));
  fs::remove(dir / "test_batch.bin");
  EXPECT_TRUE(contains(
      error_of([&] { rd::CifarDataset(root.string(), Split::Test); }),
      "expected test_batch.bin[.gz] in '" + dir.string() + "'"));
  fs::remove(dir / "data_batch_1.bin");
  fs::remove(dir / "data_batch_2.bin.gz");
  EXPECT_TRUE(contains(
      error_of([&] { rd::CifarDataset(dir.string(), Split::Train); }),
      "expected data_batch_1.bin ... data_batch_5.bin[.gz]"));
}

TEST(Datasets, CifarHundredReadsFineLabels) {
  const auto root = resnet_test::work_dir("datasets/cifar100");
  const auto dir = root / "cifar-100-binary";
  const auto hundred = rd::Cifar::Hundred;
  write_file(dir / "train.bin", cifar_records(hundred, {0, 42, 99}, 0));
  write_file(dir / "test.bin.gz", gzip(cifar_records(hundred, {7}, 20)));
  const rd::CifarDataset train(root.string(), Split::Train, hundred);
  EXPECT_EQ(train.name(), "cifar100");
  EXPECT_EQ(targets_of(train), (std::vector<int64_t>{0, 42, 99}));
  EXPECT_EQ(train.classes(), rd::class_names("cifar100"));
  EXPECT_EQ(corners(train), (std::vector<int64_t>{0, 1, 2}));
  const rd::CifarDataset test(dir.string(), Split::Test, hundred);
  EXPECT_EQ(targets_of(test), (std::vector<int64_t>{7}));
  EXPECT_EQ(test.images()[0][1][0][0].item<int64_t>(), 70);
  std::string names;
  for (const auto& name : numbered(100, "f")) {
    names += name + "\r\n";
  }
  write_text(dir / "fine_label_names.txt", names);
  EXPECT_EQ(
      rd::CifarDataset(root.string(), Split::Test, hundred).classes()[42],
      "f42");
  write_text(dir / "fine_label_names.txt", "a\nb\nc\n");
  EXPECT_TRUE(contains(
      error_of([&] { rd::CifarDataset(dir.string(), Split::Test, hundred); }),
      "expected 100 class names, one a line, got 3"));
}

TEST(Datasets, ImageFolderFollowsTorchvisionsRules) {
  const auto root = resnet_test::work_dir("datasets/folder_rules");
  const auto elsewhere = resnet_test::work_dir("datasets/folder_rules_linked");
  write_file(root / "zebra" / "b.png", solid_png(4, 4, 10));
  // An upper-case extension counts; sub-folders come after the class
  // folder's own files (os.walk's order), a symlinked folder is followed.
  write_file(root / "zebra" / "a.PNG", solid_png(4, 4, 20));
  write_file(root / "zebra" / "sub" / "c.png", solid_png(4, 4, 30));
  write_file(elsewhere / "d.png", solid_png(4, 4, 50));
  fs::create_directory_symlink(elsewhere, root / "zebra" / "link");
  write_text(root / "zebra" / "notes.txt", "not an image");
  write_file(root / "apple" / "x.jpg", jpeg_of(Bytes(48, 200), 4, 4));
  write_file(root / "apple" / "0.png", solid_png(4, 4, 40));
  write_text(root / "README", "a file is not a class");
  const rd::ImageFolder f(root.string(), rd::ImageFolderOptions().threads(2));
  EXPECT_EQ(f.name(), "folder");
  EXPECT_EQ(f.classes(), (std::vector<std::string>{"apple", "zebra"}));
  EXPECT_EQ(f.images().sizes(), (std::vector<int64_t>{6, 3, 4, 4}));
  EXPECT_EQ(targets_of(f), (std::vector<int64_t>{0, 0, 1, 1, 1, 1}));
  auto values = corners(f);
  EXPECT_NEAR(values[1], 200, 3); // JPEG: lossy
  values[1] = 200;
  EXPECT_EQ(values, (std::vector<int64_t>{40, 200, 20, 10, 50, 30}));
  // One thread decodes the same.
  EXPECT_TRUE(torch::equal(
      rd::ImageFolder(root.string(), rd::ImageFolderOptions().threads(1))
          .images(),
      f.images()));
}

TEST(Datasets, ImageFolderResizesCropsAndConvertsChannels) {
  const auto root = resnet_test::work_dir("datasets/folder_sizes");
  write_file(root / "only" / "a_wide.png", columns_png(8, 4));
  write_file(root / "only" / "b_square.png", columns_png(8, 8));
  // Size 0: the first image's shorter side (4); the 8x4 one is cropped to
  // its central columns 2 to 5, the 8x8 one shrunk.
  const rd::ImageFolder f(root.string());
  EXPECT_EQ(f.images().sizes(), (std::vector<int64_t>{2, 3, 4, 4}));
  EXPECT_TRUE(torch::equal(
      f.images()[0][1][3],
      torch::tensor({20, 30, 40, 50}, torch::kLong).to(torch::kByte)));
  // Antialiased bilinear: a triangle filter two pixels wide each side.
  EXPECT_TRUE(torch::equal(
      f.images()[1][0][0],
      torch::tensor({7, 25, 45, 63}, torch::kLong).to(torch::kByte)))
      << f.images()[1][0][0];
  // Size and channels given: grey squares of 2.
  const rd::ImageFolder grey(
      root.string(), rd::ImageFolderOptions().size(2).channels(1));
  EXPECT_EQ(grey.images().sizes(), (std::vector<int64_t>{2, 1, 2, 2}));
  EXPECT_LT(
      grey.images()[0][0][0][0].item<int>(),
      grey.images()[0][0][0][1].item<int>());
  // Channels 0 follow the first image: a grey PNG gives 1 channel.
  write_file(root / "only" / "0_grey.png", grey_png(4, 4, 99));
  const rd::ImageFolder first_grey(root.string());
  EXPECT_EQ(first_grey.images().sizes(), (std::vector<int64_t>{3, 1, 4, 4}));
  EXPECT_EQ(first_grey.images()[0].max().item<int64_t>(), 99);
}

TEST(Datasets, ImageFolderRefusesWhatItCannotRead) {
  const auto root = resnet_test::work_dir("datasets/folder_errors");
  write_file(root / "bmp" / "cls" / "a.png", solid_png(2, 2, 1));
  write_text(root / "bmp" / "cls" / "b.BMP", "BM not really");
  EXPECT_TRUE(contains(
      error_of([&] { rd::ImageFolder((root / "bmp").string()); }),
      "b.BMP': only PNG and JPEG are read"));
  write_file(root / "empty" / "a" / "x.png", solid_png(2, 2, 1));
  write_text(root / "empty" / "b" / "x.txt", "text");
  fs::create_directories(root / "empty" / "c");
  EXPECT_TRUE(contains(
      error_of([&] { rd::ImageFolder((root / "empty").string()); }),
      "for every class, found none for 'b', 'c'"));
  write_text(root / "flat" / "x.png", "a file, no class folder");
  EXPECT_TRUE(contains(
      error_of([&] { rd::ImageFolder((root / "flat").string()); }),
      "expected one folder per class, found none"));
  EXPECT_TRUE(contains(
      error_of([&] { rd::ImageFolder((root / "nowhere").string()); }),
      "image folder '" + (root / "nowhere").string() + "': no such folder"));
  EXPECT_TRUE(contains(
      error_of([&] {
        rd::ImageFolder((root / "empty").string(), {"a", "zzz"});
      }),
      "expected a folder for class 'zzz'"));
  const auto png = solid_png(8, 8, 1);
  write_file(
      root / "cut" / "a" / "x.png", Bytes(png.begin(), png.begin() + 40));
  EXPECT_TRUE(contains(
      error_of([&] { rd::ImageFolder((root / "cut").string()); }),
      "cannot decode PNG image '" + (root / "cut" / "a" / "x.png").string()));
  EXPECT_TRUE(contains(
      error_of([&] {
        rd::ImageFolder(
            (root / "bmp").string(), rd::ImageFolderOptions().channels(2));
      }),
      "channels 0, 1 or 3"));
}

TEST(Datasets, ImageFolderTakesTheTrainingClassesForATestSplit) {
  const auto root = resnet_test::work_dir("datasets/folder_classes");
  for (const char* c : {"cat", "dog", "eel"}) {
    write_file(root / "train" / c / "1.png", solid_png(2, 2, 1));
    write_file(
        root / "test" / c / "1.png",
        solid_png(2, 2, static_cast<uint8_t>(c[0])));
  }
  write_file(root / "test" / "zebra" / "1.png", solid_png(2, 2, 9));
  const rd::ImageFolder train((root / "train").string());
  const rd::ImageFolder test((root / "test").string(), train.classes());
  EXPECT_EQ(test.classes(), train.classes());
  EXPECT_EQ(targets_of(test), (std::vector<int64_t>{0, 1, 2}));
  // The given order numbers the classes; a folder not in the list is left.
  const rd::ImageFolder reordered(
      (root / "test").string(), {"eel", "cat", "dog"});
  EXPECT_EQ(corners(reordered), (std::vector<int64_t>{'e', 'c', 'd'}));
  EXPECT_EQ(targets_of(reordered), (std::vector<int64_t>{0, 1, 2}));
  resnet_test::remove_tree(root / "test" / "eel");
  EXPECT_TRUE(contains(
      error_of(
          [&] { rd::ImageFolder((root / "test").string(), train.classes()); }),
      "expected a folder for class 'eel'"));
}

TEST(Datasets, GuessAndOpenEveryKind) {
  const auto base = resnet_test::work_dir("datasets/guess");
  // IDX files of no known kind, in a folder named after Fashion-MNIST: the
  // pixels decide, not the name. Classes "0" to the highest label of both.
  const auto idx_dir = base / "fashion-mnist";
  write_idx_split(idx_dir, "train", {0, 1, 2}, false, true);
  write_idx_split(idx_dir, "t10k", {4}, true, false);
  const auto guess = rd::guess_dataset(idx_dir.string());
  EXPECT_EQ(guess.kind, "idx");
  EXPECT_TRUE(contains(guess.reason, "no known dataset"));
  const auto idx_both = rd::open_dataset(idx_dir.string());
  EXPECT_EQ(idx_both.kind, "idx");
  EXPECT_EQ(idx_both.guess_reason, guess.reason);
  EXPECT_EQ(idx_both.train.classes(), numbered(5));
  EXPECT_EQ(idx_both.test.classes(), numbered(5));
  EXPECT_EQ(idx_both.train.size().value(), 3u);
  EXPECT_EQ(targets_of(idx_both.test), (std::vector<int64_t>{4}));
  const auto as_mnist = rd::open_dataset(idx_dir.string(), "mnist");
  EXPECT_EQ(as_mnist.kind, "mnist");
  EXPECT_EQ(as_mnist.guess_reason, "");
  EXPECT_EQ(as_mnist.test.classes(), rd::class_names("mnist"));

  // CIFAR-10 in its folder, CIFAR-100 without one.
  const auto c10 = base / "c10";
  write_file(
      c10 / "cifar-10-batches-bin" / "data_batch_1.bin",
      cifar_records(rd::Cifar::Ten, {1, 2}, 0));
  write_file(
      c10 / "cifar-10-batches-bin" / "test_batch.bin.gz",
      gzip(cifar_records(rd::Cifar::Ten, {3}, 0)));
  EXPECT_EQ(rd::guess_dataset(c10.string()).kind, "cifar10");
  const auto ten = rd::open_dataset(c10.string());
  EXPECT_EQ(ten.kind, "cifar10");
  EXPECT_EQ(ten.train.size().value(), 2u);
  EXPECT_EQ(targets_of(ten.test), (std::vector<int64_t>{3}));
  const auto c100 = base / "c100";
  write_file(c100 / "train.bin", cifar_records(rd::Cifar::Hundred, {50}, 0));
  write_file(c100 / "test.bin", cifar_records(rd::Cifar::Hundred, {60}, 0));
  EXPECT_EQ(rd::guess_dataset(c100.string()).kind, "cifar100");
  const auto hundred = rd::open_dataset(c100.string());
  EXPECT_EQ(targets_of(hundred.test), (std::vector<int64_t>{60}));
  EXPECT_EQ(hundred.train.classes().size(), 100u);

  // Image folders train/ and val/: the test images take the training
  // split's size and classes.
  const auto images = base / "images";
  write_file(images / "train" / "a" / "1.png", solid_png(6, 6, 10));
  write_file(images / "train" / "b" / "1.png", solid_png(6, 6, 20));
  write_file(images / "val" / "a" / "1.png", solid_png(10, 10, 30));
  write_file(images / "val" / "b" / "1.png", solid_png(9, 6, 40));
  const auto folder_guess = rd::guess_dataset(images.string());
  EXPECT_EQ(folder_guess.kind, "folder");
  EXPECT_TRUE(contains(folder_guess.reason, "val/"));
  const auto folder = rd::open_dataset(images.string());
  EXPECT_EQ(folder.kind, "folder");
  EXPECT_EQ(folder.train.images().sizes(), (std::vector<int64_t>{2, 3, 6, 6}));
  EXPECT_EQ(folder.test.images().sizes(), (std::vector<int64_t>{2, 3, 6, 6}));
  EXPECT_EQ(corners(folder.test), (std::vector<int64_t>{30, 40}));
  EXPECT_EQ(folder.test.classes(), folder.train.classes());
  const auto small = rd::open_dataset(
      images.string(), "folder", rd::ImageFolderOptions().size(4).channels(1));
  EXPECT_EQ(small.test.images().sizes(), (std::vector<int64_t>{2, 1, 4, 4}));

  // What cannot be read.
  EXPECT_TRUE(contains(
      error_of([&] { rd::open_dataset(images.string(), "imagenet"); }),
      "unknown dataset kind 'imagenet' (expected fashion-mnist, mnist, "
      "kmnist, idx, cifar10, cifar100, folder"));
  fs::create_directories(base / "empty" / "train");
  const auto message =
      error_of([&] { rd::guess_dataset((base / "empty").string()); });
  for (const char* part :
       {"cannot tell the format of dataset folder",
        "train-images-idx3-ubyte",
        "data_batch_1.bin",
        "train.bin",
        "train/ and test/ (or val/)"}) {
    EXPECT_TRUE(contains(message, part)) << part << ": " << message;
  }
  EXPECT_TRUE(contains(
      error_of([&] { rd::open_dataset((base / "empty").string(), "folder"); }),
      "expected sub-folders train/ and test/ (or val/)"));
  const auto nowhere = (base / "nowhere").string();
  for (const char* kind : {"", "mnist"}) {
    EXPECT_TRUE(contains(
        error_of([&] { rd::open_dataset(nowhere, kind); }),
        "dataset folder '" + nowhere + "': no such folder"));
  }
}

TEST(Datasets, InMemoryKindsResizeToTheAskedSize) {
  const auto base = resnet_test::work_dir("datasets/resize");
  // IDX images of 4x3 pixels, each of one value: the shorter side becomes
  // 6, the centre 6x6 is kept, and the values stay.
  write_idx_split(base / "idx", "train", {0, 1, 2}, false, false);
  write_idx_split(base / "idx", "t10k", {1}, false, false);
  const auto six = rd::open_dataset(
      (base / "idx").string(), "idx", rd::ImageFolderOptions().size(6));
  EXPECT_EQ(six.train.images().sizes(), (std::vector<int64_t>{3, 1, 6, 6}));
  EXPECT_EQ(six.test.images().sizes(), (std::vector<int64_t>{1, 1, 6, 6}));
  EXPECT_EQ(targets_of(six.train), (std::vector<int64_t>{0, 1, 2}));
  for (int64_t i = 0; i < 3; ++i) {
    const auto image = six.train.images()[i];
    EXPECT_EQ(image.min().item<int64_t>(), 10 * i);
    EXPECT_EQ(image.max().item<int64_t>(), 10 * i);
  }
  EXPECT_TRUE(contains(six.describe(), "1x6x6"));
  // CIFAR: 32x32 to 16x16, each plane still of its one value.
  write_file(
      base / "c10" / "data_batch_1.bin",
      cifar_records(rd::Cifar::Ten, {1, 2}, 0));
  write_file(
      base / "c10" / "test_batch.bin", cifar_records(rd::Cifar::Ten, {3}, 0));
  const auto c10 = rd::open_dataset(
      (base / "c10").string(), "cifar10", rd::ImageFolderOptions().size(16));
  EXPECT_EQ(c10.train.images().sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  EXPECT_EQ(corners(c10.train), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(c10.train.images()[1][2].min().item<int64_t>(), 101);
  EXPECT_EQ(c10.train.images()[1][2].max().item<int64_t>(), 101);
  // The data's own size, or 0, leaves the images as read.
  const auto same = rd::open_dataset(
      (base / "c10").string(), "cifar10", rd::ImageFolderOptions().size(32));
  const auto plain = rd::open_dataset((base / "c10").string(), "cifar10");
  EXPECT_TRUE(torch::equal(same.train.images(), plain.train.images()));

  // An edge between 0 and 200 doubled in size: the ends keep their values,
  // the pixels between rise without overshooting.
  auto edge = torch::zeros({1, 1, 4, 4}, torch::kByte);
  edge.narrow(3, 2, 2).fill_(200);
  const auto big = rd::resized(
      rd::ImageDataset(edge, torch::zeros({1}, torch::kLong), {"a"}, "edge"),
      8);
  const auto row = big.images()[0][0][3];
  EXPECT_EQ(row[0].item<int64_t>(), 0);
  EXPECT_EQ(row[7].item<int64_t>(), 200);
  EXPECT_TRUE(
      (row.slice(0, 1).to(torch::kInt) >= row.slice(0, 0, 7).to(torch::kInt))
          .all()
          .item<bool>());
  EXPECT_TRUE(contains(error_of([&] { rd::resized(big, 0); }), "not 0"));
}

TEST(Datasets, ChannelStatisticsArePerChannelFractionsOf255) {
  // Channel 0: half 0, half 255 -> mean 0.5, std 0.5; channel 1: constant
  // 51 -> mean 0.2, std reported as 1.
  auto images = torch::zeros({4, 2, 2, 2}, torch::kByte);
  images.select(1, 0).slice(0, 0, 2).fill_(255);
  images.select(1, 1).fill_(51);
  const auto [mean, std] = resnet::data::channel_statistics(images);
  ASSERT_EQ(mean.size(), 2u);
  EXPECT_NEAR(mean[0], 0.5, 1e-12);
  EXPECT_NEAR(std[0], 0.5, 1e-12);
  EXPECT_NEAR(mean[1], 0.2, 1e-12);
  EXPECT_EQ(std[1], 1.0);
  EXPECT_TRUE(contains(
      error_of([] {
        resnet::data::channel_statistics(torch::zeros({2, 1, 2, 2}));
      }),
      "expects uint8 images"));
}

} // namespace test_data
