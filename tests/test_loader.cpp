// The loader and the batched augmentations (include/resnet/data/loader.h,
// include/resnet/data/augment.h).
#include "test_support.h"

#include <resnet/data/augment.h>
#include <resnet/data/loader.h>
#include <resnet/train/losses.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

// The tests of this file in a namespace of their own: CMake compiles the
// test sources together in batches (UNITY_BUILD), and one file's helpers
// and using-declarations must not meet another's.
namespace test_loader {

namespace {

using resnet::data::Batch;
using resnet::data::Loader;
using resnet::data::LoaderOptions;
using resnet_test::contains;
using resnet_test::error_of;

// ------------------------------------------------------------- loader --

/// n images [n, 2, 3, 3] uint8 whose pixels tell their index (i % 251 and
/// i / 251), and targets 1000 + i.
struct Data {
  torch::Tensor images;
  torch::Tensor targets;
};

Data make_data(int64_t n) {
  const auto i = torch::arange(n, torch::kLong);
  auto images = torch::empty({n, 2, 3, 3}, torch::kByte);
  images.select(1, 0).copy_(i.remainder(251).view({n, 1, 1}).expand({n, 3, 3}));
  images.select(1, 1).copy_(
      i.div(251, "floor").view({n, 1, 1}).expand({n, 3, 3}));
  return {images, i + 1000};
}

/// Every batch of `epoch` from `first` on.
std::vector<Batch>
epoch_batches(Loader& loader, int64_t epoch, int64_t first = 0) {
  loader.start_epoch(epoch, first);
  std::vector<Batch> out;
  while (auto b = loader.next()) {
    out.push_back(std::move(*b));
  }
  return out;
}

/// Whether each batch holds the examples its indices name, and says which
/// epoch and batch it is.
void expect_consistent(
    const std::vector<Batch>& batches,
    const Data& data,
    int64_t epoch,
    int64_t first = 0) {
  for (size_t k = 0; k < batches.size(); ++k) {
    const auto& b = batches[k];
    EXPECT_EQ(b.epoch, epoch);
    EXPECT_EQ(b.index, first + static_cast<int64_t>(k));
    EXPECT_EQ(b.indices.scalar_type(), torch::kLong);
    EXPECT_TRUE(b.indices.is_cpu());
    EXPECT_TRUE(
        torch::equal(b.images.cpu(), data.images.index_select(0, b.indices)));
    EXPECT_TRUE(
        torch::equal(b.targets.cpu(), data.targets.index_select(0, b.indices)));
  }
}

std::vector<int64_t> indices_of(const std::vector<Batch>& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches) {
    const auto* p = b.indices.data_ptr<int64_t>();
    out.insert(out.end(), p, p + b.indices.numel());
  }
  return out;
}

bool same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].index != b[k].index || a[k].epoch != b[k].epoch ||
        !torch::equal(a[k].indices, b[k].indices) ||
        !torch::equal(a[k].images.cpu(), b[k].images.cpu()) ||
        !torch::equal(a[k].targets.cpu(), b[k].targets.cpu())) {
      return false;
    }
  }
  return true;
}

TEST(Loader, EveryExampleOncePerEpoch) {
  const auto data = make_data(103);
  Loader loader(
      data.images,
      data.targets,
      LoaderOptions().batch_size(10).workers(2).seed(7));
  EXPECT_EQ(loader.size(), 103);
  EXPECT_EQ(loader.batches_per_epoch(), 11);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto batches = epoch_batches(loader, epoch);
    ASSERT_EQ(batches.size(), 11u);
    for (size_t k = 0; k < 10; ++k) {
      EXPECT_EQ(batches[k].images.size(0), 10);
    }
    EXPECT_EQ(batches[10].images.size(0), 3);
    EXPECT_EQ(batches[0].images.scalar_type(), torch::kByte);
    expect_consistent(batches, data, epoch);
    auto all = indices_of(batches);
    std::sort(all.begin(), all.end());
    std::vector<int64_t> expected(103);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(all, expected);
    // Batch k is positions [10k, 10k + 10) of the epoch's order.
    const auto order = resnet::data::epoch_order(103, 7, epoch);
    EXPECT_TRUE(torch::equal(batches[3].indices, order.slice(0, 30, 40)));
    // Shuffled, not in storage order.
    EXPECT_FALSE(torch::equal(order, torch::arange(103, torch::kLong)));
    EXPECT_FALSE(loader.next().has_value());
  }
}

TEST(Loader, TakesADatasetsImagesAndTargets) {
  struct Toy {
    torch::Tensor x, y;
    torch::Tensor images() const {
      return x;
    }
    torch::Tensor targets() const {
      return y;
    }
  };
  const auto data = make_data(9);
  Loader from_dataset(
      Toy{data.images, data.targets}, LoaderOptions().batch_size(4).seed(3));
  Loader from_tensors(
      data.images, data.targets, LoaderOptions().batch_size(4).seed(3));
  const auto a = epoch_batches(from_dataset, 1);
  const auto b = epoch_batches(from_tensors, 1);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_TRUE(torch::equal(a[k].images, b[k].images)) << k;
    EXPECT_TRUE(torch::equal(a[k].targets, b[k].targets)) << k;
  }
}

TEST(Loader, UnshuffledInStorageOrder) {
  const auto data = make_data(25);
  Loader loader(
      data.images, data.targets, LoaderOptions().batch_size(8).shuffle(false));
  const auto all = indices_of(epoch_batches(loader, 3));
  std::vector<int64_t> expected(25);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(all, expected);
}

TEST(Loader, DropLastDropsTheTail) {
  const auto data = make_data(103);
  Loader loader(
      data.images,
      data.targets,
      LoaderOptions().batch_size(10).drop_last(true).seed(3));
  EXPECT_EQ(loader.batches_per_epoch(), 10);
  const auto batches = epoch_batches(loader, 0);
  ASSERT_EQ(batches.size(), 10u);
  for (const auto& b : batches) {
    EXPECT_EQ(b.images.size(0), 10);
  }
  const auto order = resnet::data::epoch_order(103, 3, 0);
  EXPECT_EQ(
      indices_of(batches),
      std::vector<int64_t>(
          order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + 100));
  expect_consistent(batches, data, 0);
}

TEST(Loader, SameBatchesForAnyWorkersAndPrefetch) {
  const auto data = make_data(300);
  // A transform that draws from batch_seed, as a CPU augmentation would.
  const auto transform = [](Batch& b) {
    std::mt19937_64 rng(resnet::data::batch_seed(11, b.epoch, b.index));
    b.images = b.images.to(torch::kFloat) + static_cast<double>(rng() % 1000);
  };
  std::vector<std::vector<Batch>> runs;
  for (int64_t workers : {0, 1, 4}) {
    for (int64_t prefetch : {1, 3}) {
      Loader loader(
          data.images,
          data.targets,
          LoaderOptions()
              .batch_size(16)
              .seed(11)
              .workers(workers)
              .prefetch(prefetch)
              .transform(transform));
      runs.push_back(epoch_batches(loader, 2));
    }
  }
  ASSERT_EQ(runs[0].size(), 19u);
  EXPECT_EQ(runs[0][0].images.scalar_type(), torch::kFloat);
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_TRUE(same_batches(runs[0], runs[r])) << "run " << r;
  }
  // The transform's offsets, drawn from batch_seed, differ between batches.
  const auto offset = [&](const Batch& b) {
    const auto original = data.images.index_select(0, b.indices);
    return (b.images - original.to(torch::kFloat)).flatten()[0].item<double>();
  };
  EXPECT_NE(offset(runs[0][0]), offset(runs[0][1]));
}

TEST(Loader, PrefetchesAtMostPrefetchBatchesAhead) {
  const auto data = make_data(100);
  std::atomic<int> prepared{0};
  Loader loader(
      data.images,
      data.targets,
      LoaderOptions().batch_size(5).workers(4).prefetch(2).transform(
          [&prepared](Batch&) { ++prepared; }));
  const auto settle = [&](int expected) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (prepared.load() < expected &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // Give idle workers time to overrun the bound, if they could.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  };
  settle(0);
  EXPECT_EQ(prepared.load(), 0) << "work before start_epoch";
  loader.start_epoch(0);
  settle(2);
  EXPECT_EQ(prepared.load(), 2);
  ASSERT_TRUE(loader.next().has_value());
  settle(3);
  EXPECT_EQ(prepared.load(), 3);
}

TEST(Loader, OrderDependsOnSeedAndEpochOnly) {
  const auto a = resnet::data::epoch_order(500, 1, 0);
  EXPECT_TRUE(
      torch::equal(std::get<0>(a.sort()), torch::arange(500, torch::kLong)));
  EXPECT_TRUE(torch::equal(a, resnet::data::epoch_order(500, 1, 0)));
  EXPECT_FALSE(torch::equal(a, resnet::data::epoch_order(500, 1, 1)));
  EXPECT_FALSE(torch::equal(a, resnet::data::epoch_order(500, 2, 0)));
  EXPECT_EQ(resnet::data::epoch_order(0, 1, 0).numel(), 0);
  EXPECT_EQ(
      resnet::data::batch_seed(1, 2, 3), resnet::data::batch_seed(1, 2, 3));
  EXPECT_NE(
      resnet::data::batch_seed(1, 2, 3), resnet::data::batch_seed(1, 3, 2));
  EXPECT_NE(
      resnet::data::batch_seed(1, 2, 3), resnet::data::batch_seed(2, 2, 3));

  const auto data = make_data(64);
  const auto run = [&](uint64_t seed, int64_t epoch) {
    Loader loader(
        data.images, data.targets, LoaderOptions().batch_size(8).seed(seed));
    return indices_of(epoch_batches(loader, epoch));
  };
  EXPECT_EQ(run(5, 0), run(5, 0));
  EXPECT_NE(run(5, 0), run(5, 1));
  EXPECT_NE(run(5, 0), run(6, 0));
}

TEST(Loader, ResumesMidEpoch) {
  const auto data = make_data(100);
  const auto options =
      LoaderOptions().batch_size(9).seed(4).workers(3).prefetch(2);
  Loader full(data.images, data.targets, options);
  const auto all = epoch_batches(full, 5);
  ASSERT_EQ(all.size(), 12u);
  Loader resumed(data.images, data.targets, options);
  const auto tail = epoch_batches(resumed, 5, 4);
  EXPECT_TRUE(
      same_batches(std::vector<Batch>(all.begin() + 4, all.end()), tail));
  expect_consistent(tail, data, 5, 4);
  // Starting at the end gives nothing.
  EXPECT_TRUE(epoch_batches(resumed, 5, 12).empty());
}

TEST(Loader, AbandonsAnEpochMidway) {
  const auto data = make_data(200);
  // A slow transform keeps workers busy with the abandoned epoch.
  const auto options =
      LoaderOptions().batch_size(10).seed(9).workers(4).prefetch(3).transform(
          [](Batch&) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          });
  Loader reference(data.images, data.targets, options);
  const auto epoch1 = epoch_batches(reference, 1);
  const auto epoch2 = epoch_batches(reference, 2);

  Loader loader(data.images, data.targets, options);
  loader.start_epoch(0);
  ASSERT_TRUE(loader.next().has_value());
  ASSERT_TRUE(loader.next().has_value());
  const auto b = epoch_batches(loader, 1);
  EXPECT_TRUE(same_batches(b, epoch1));
  // Abandoned before any batch was taken, and again right after starting.
  loader.start_epoch(3);
  loader.start_epoch(0, 5);
  EXPECT_TRUE(same_batches(epoch_batches(loader, 2), epoch2));
}

TEST(Loader, ShardsCoverThePaddedOrder) {
  const auto data = make_data(10);
  const int64_t world = 3;
  const auto order = resnet::data::epoch_order(10, 8, 1);
  // DistributedSampler's padding: the order wrapped to 12 = 4 x 3.
  const auto padded = torch::cat({order, order.slice(0, 0, 2)});
  std::vector<int64_t> count(10, 0);
  for (int64_t rank = 0; rank < world; ++rank) {
    Loader loader(
        data.images,
        data.targets,
        LoaderOptions()
            .batch_size(3)
            .seed(8)
            .rank(rank)
            .world_size(world)
            .workers(rank % 2));
    EXPECT_EQ(loader.size(), 4);
    EXPECT_EQ(loader.batches_per_epoch(), 2);
    const auto batches = epoch_batches(loader, 1);
    expect_consistent(batches, data, 1);
    const auto mine = indices_of(batches);
    const auto expected = padded.slice(0, rank, 12, world).contiguous();
    EXPECT_EQ(
        mine,
        std::vector<int64_t>(
            expected.data_ptr<int64_t>(), expected.data_ptr<int64_t>() + 4))
        << "rank " << rank;
    for (auto i : mine) {
      ++count[static_cast<size_t>(i)];
    }
  }
  // Positions are disjoint: the two padding examples come twice, the rest once.
  for (int64_t i = 0; i < 10; ++i) {
    const bool repeated =
        i == order[0].item<int64_t>() || i == order[1].item<int64_t>();
    EXPECT_EQ(count[static_cast<size_t>(i)], repeated ? 2 : 1)
        << "example " << i;
  }
  // More ranks than examples: padding wraps around more than once.
  Loader wide(
      data.images.slice(0, 0, 2),
      data.targets.slice(0, 0, 2),
      LoaderOptions().batch_size(4).shuffle(false).rank(4).world_size(5));
  EXPECT_EQ(indices_of(epoch_batches(wide, 0)), std::vector<int64_t>{0});
}

TEST(Loader, TransformRunsAndItsErrorSurfaces) {
  const auto data = make_data(50);
  for (int64_t workers : {0, 2}) {
    std::atomic<int> calls{0};
    Loader loader(
        data.images,
        data.targets,
        LoaderOptions().batch_size(10).workers(workers).transform(
            [&calls](Batch& b) {
              ++calls;
              if (b.index == 2) {
                throw std::runtime_error("bad batch 2");
              }
              b.targets = b.targets * 2;
            }));
    loader.start_epoch(0);
    auto b0 = loader.next();
    ASSERT_TRUE(b0.has_value());
    EXPECT_TRUE(torch::equal(
        b0->targets, data.targets.index_select(0, b0->indices) * 2));
    ASSERT_TRUE(loader.next().has_value());
    try {
      loader.next();
      ADD_FAILURE() << "no exception, workers " << workers;
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "bad batch 2");
    }
    // The loader goes on with the next batch.
    auto b3 = loader.next();
    ASSERT_TRUE(b3.has_value());
    EXPECT_EQ(b3->index, 3);
    EXPECT_GE(calls.load(), 4);
  }
}

TEST(Loader, DestroyedMidEpochWithoutHanging) {
  const auto data = make_data(500);
  {
    Loader loader(
        data.images,
        data.targets,
        LoaderOptions().batch_size(4).workers(4).prefetch(3));
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
  }
  {
    Loader loader(
        data.images,
        data.targets,
        LoaderOptions().batch_size(4).workers(3).transform([](Batch&) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }));
    loader.start_epoch(0);
  }
  {
    Loader never_started(data.images, data.targets, LoaderOptions().workers(2));
  }
}

TEST(Loader, RejectsBadOptions) {
  const auto data = make_data(10);
  const auto make = [&](const LoaderOptions& o) {
    return error_of([&] { Loader loader(data.images, data.targets, o); });
  };
  EXPECT_TRUE(contains(
      make(LoaderOptions().batch_size(0)),
      "resnet: Loader expects batch_size >= 1, got 0"));
  EXPECT_TRUE(contains(make(LoaderOptions().workers(-1)), "workers >= 0"));
  EXPECT_TRUE(contains(make(LoaderOptions().prefetch(0)), "prefetch >= 1"));
  EXPECT_TRUE(contains(
      make(LoaderOptions().rank(2).world_size(2)),
      "0 <= rank < world_size, got rank 2 and world_size 2"));
  EXPECT_TRUE(
      contains(make(LoaderOptions().rank(-1)), "0 <= rank < world_size"));
  EXPECT_TRUE(
      contains(make(LoaderOptions().world_size(0)), "0 <= rank < world_size"));
  if (!torch::cuda::is_available()) {
    EXPECT_TRUE(contains(
        make(LoaderOptions().device(torch::Device(torch::kCUDA, 0))),
        "CUDA is not available"));
  }
  EXPECT_TRUE(contains(
      error_of([&] { Loader l(data.images.select(1, 0), data.targets); }),
      "resnet: Loader expects uint8 or floating-point images "
      "[N, C, H, W], got Byte [10, 3, 3]"));
  EXPECT_TRUE(contains(
      error_of([&] { Loader l(data.images.to(torch::kInt), data.targets); }),
      "uint8 or floating-point"));
  EXPECT_TRUE(contains(
      error_of([&] { Loader l(data.images, data.targets.slice(0, 0, 9)); }),
      "int64 targets [10] (one per image), got Long [9]"));
  EXPECT_TRUE(contains(
      error_of([&] { Loader l(data.images, data.targets.to(torch::kInt)); }),
      "int64 targets"));
  EXPECT_TRUE(contains(
      error_of([&] {
        Loader l(data.images.slice(0, 0, 0), data.targets.slice(0, 0, 0));
      }),
      "at least one example"));
  Loader loader(data.images, data.targets, LoaderOptions().batch_size(4));
  EXPECT_TRUE(contains(
      error_of([&] { loader.next(); }),
      "resnet: Loader::next() before start_epoch()"));
  EXPECT_TRUE(contains(
      error_of([&] { loader.start_epoch(0, 4); }),
      "first batch in [0, 3], got 4"));
  EXPECT_TRUE(
      contains(error_of([&] { loader.start_epoch(-1); }), "epoch >= 0"));
}

TEST(Loader, CudaPinnedBatchesEqualCpuBatches) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  const auto data = make_data(333);
  const auto options = LoaderOptions().batch_size(32).seed(2).workers(2);
  Loader cpu(data.images, data.targets, options);
  auto cuda_options = options;
  cuda_options.device(torch::Device(torch::kCUDA, 0));
  Loader cuda(data.images, data.targets, cuda_options);
  const auto a = epoch_batches(cpu, 1);
  const auto b = epoch_batches(cuda, 1);
  ASSERT_EQ(b.size(), a.size());
  for (const auto& batch : b) {
    EXPECT_TRUE(batch.images.is_cuda());
    EXPECT_TRUE(batch.targets.is_cuda());
    EXPECT_TRUE(batch.indices.is_cpu());
  }
  EXPECT_TRUE(same_batches(a, b));
  // A transform's pageable result is pinned again on its way.
  cuda_options.transform(
      [](Batch& batch) { batch.images = batch.images.to(torch::kFloat); });
  Loader transformed(data.images, data.targets, cuda_options);
  const auto c = epoch_batches(transformed, 1);
  ASSERT_EQ(c.size(), a.size());
  EXPECT_TRUE(torch::equal(c[3].images.cpu(), a[3].images.to(torch::kFloat)));
}

// ------------------------------------------------------------ augment --

using resnet::data::ErasingOptions;
using resnet::data::MixOptions;

/// Image i flipped left-right, by comparing its first row with the
/// original's: images whose rows increase left to right.
torch::Tensor ramps(int64_t n, int64_t w) {
  return torch::arange(w, torch::kFloat)
      .view({1, 1, 1, w})
      .expand({n, 2, 3, w})
      .contiguous();
}

TEST(Augment, FlipRateAndExtremes) {
  const auto x = ramps(2000, 5);
  std::mt19937_64 rng(1);
  const auto y = resnet::data::random_horizontal_flip(x, 0.5, rng);
  ASSERT_EQ(y.sizes(), x.sizes());
  const auto flipped = y.select(3, 0).eq(4).all(2).all(1);
  const auto same = y.eq(x).flatten(1).all(1);
  // Every image is either itself or its mirror image.
  EXPECT_TRUE((flipped ^ same).all().item<bool>());
  const double rate = flipped.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(rate, 0.5, 0.05);
  EXPECT_TRUE(torch::equal(resnet::data::random_horizontal_flip(x, 0, rng), x));
  EXPECT_TRUE(torch::equal(
      resnet::data::random_horizontal_flip(x, 1, rng), x.flip({3})));
  // The same generator state gives the same flips.
  std::mt19937_64 again(1);
  EXPECT_TRUE(
      torch::equal(resnet::data::random_horizontal_flip(x, 0.5, again), y));
}

/// The offsets (dy, dx) of each image of a random crop, found by trying
/// them all per image on the padded image: [N, 2], -1 where none or more
/// than one matches.
torch::Tensor crop_offsets(
    const torch::Tensor& x,
    const torch::Tensor& y,
    int64_t padding,
    double fill) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const auto padded =
      torch::constant_pad_nd(x, {padding, padding, padding, padding}, fill);
  auto found = torch::full({n, 2}, -1, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    int matches = 0;
    for (int64_t dy = 0; dy <= 2 * padding; ++dy) {
      for (int64_t dx = 0; dx <= 2 * padding; ++dx) {
        if (torch::equal(padded[i].narrow(1, dy, h).narrow(2, dx, w), y[i])) {
          ++matches;
          found[i][0].fill_(dy);
          found[i][1].fill_(dx);
        }
      }
    }
    if (matches != 1) {
      found[i].fill_(-1);
    }
  }
  return found;
}

TEST(Augment, RandomCropShiftsThePaddedImage) {
  torch::manual_seed(0);
  std::mt19937_64 rng(2);
  const auto x = torch::rand({6, 3, 5, 7}) + 1;
  EXPECT_TRUE(resnet::data::random_crop(x, 0, rng).is_same(x));
  for (double fill : {0.0, -1.0}) {
    const auto y = resnet::data::random_crop(x, 3, rng, fill);
    ASSERT_EQ(y.sizes(), x.sizes());
    const auto offsets = crop_offsets(x, y, 3, fill);
    EXPECT_TRUE(offsets.ge(0).all().item<bool>()) << offsets;
    EXPECT_TRUE(offsets.le(6).all().item<bool>()) << offsets;
  }
  // Doubles too; same generator state, same crops.
  const auto xd = x.to(torch::kDouble);
  std::mt19937_64 a(3), b(3);
  EXPECT_TRUE(torch::equal(
      resnet::data::random_crop(xd, 2, a),
      resnet::data::random_crop(xd, 2, b)));
}

TEST(Augment, RandomCropOffsetsAreUniform) {
  // 4x4 images of distinct non-zero values: each shift in [0, 4]^2 gives a
  // different crop.
  const int64_t n = 2000;
  const auto x = (torch::arange(16, torch::kFloat) + 1)
                     .view({1, 1, 4, 4})
                     .expand({n, 1, 4, 4})
                     .contiguous();
  std::mt19937_64 rng(4);
  const auto y = resnet::data::random_crop(x, 2, rng);
  const auto padded = torch::constant_pad_nd(x, {2, 2, 2, 2}, 0);
  auto matched = torch::zeros({n}, torch::kLong);
  std::vector<int64_t> rows(5, 0), cols(5, 0);
  for (int64_t dy = 0; dy <= 4; ++dy) {
    for (int64_t dx = 0; dx <= 4; ++dx) {
      const auto hit =
          y.eq(padded.narrow(2, dy, 4).narrow(3, dx, 4)).flatten(1).all(1);
      const auto count = hit.sum().item<int64_t>();
      matched += hit.to(torch::kLong);
      rows[static_cast<size_t>(dy)] += count;
      cols[static_cast<size_t>(dx)] += count;
      // 80 expected per cell.
      EXPECT_GT(count, 40) << dy << "," << dx;
      EXPECT_LT(count, 130) << dy << "," << dx;
    }
  }
  EXPECT_TRUE(matched.eq(1).all().item<bool>());
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(rows[i], 400, 80) << "dy " << i;
    EXPECT_NEAR(cols[i], 400, 80) << "dx " << i;
  }
}

/// The erased rectangle of each image (where it equals `value` in every
/// channel), as {rows, cols}, or {0, 0} if none; fails unless the erased
/// pixels form one rectangle.
std::vector<std::pair<int64_t, int64_t>> erased_boxes(
    const torch::Tensor& y,
    double value) {
  std::vector<std::pair<int64_t, int64_t>> out;
  const auto mask = y.eq(value);
  for (int64_t i = 0; i < y.size(0); ++i) {
    const auto m = mask[i];
    EXPECT_TRUE(torch::equal(m.all(0), m.any(0)))
        << "image " << i << ": channels differ";
    const auto plane = m[0];
    const auto r = plane.any(1).nonzero().flatten();
    const auto c = plane.any(0).nonzero().flatten();
    if (r.numel() == 0) {
      out.emplace_back(0, 0);
      continue;
    }
    const int64_t top = r.min().item<int64_t>(),
                  bottom = r.max().item<int64_t>() + 1;
    const int64_t left = c.min().item<int64_t>(),
                  right = c.max().item<int64_t>() + 1;
    EXPECT_EQ(plane.sum().item<int64_t>(), (bottom - top) * (right - left))
        << "image " << i << ": not a rectangle";
    out.emplace_back(bottom - top, right - left);
  }
  return out;
}

TEST(Augment, RandomErasingOneRectangle) {
  torch::manual_seed(0);
  const auto x = torch::rand({200, 3, 32, 32}) + 1; // never 0
  std::mt19937_64 rng(5);
  EXPECT_TRUE(torch::equal(
      resnet::data::random_erasing(x, ErasingOptions().p(0), rng), x));
  const auto options = ErasingOptions().p(1).value(0);
  const auto y = resnet::data::random_erasing(x, options, rng);
  ASSERT_EQ(y.sizes(), x.sizes());
  // Outside the rectangle nothing changes.
  EXPECT_TRUE(torch::equal(torch::where(y.eq(0), x, y), x));
  for (const auto& box : erased_boxes(y, 0)) {
    const double area = static_cast<double>(box.first * box.second) / (32 * 32);
    // Rounding each side to whole pixels moves the area by up to ~17 pixels.
    EXPECT_GE(area, options.min_area() - 0.02);
    EXPECT_LE(area, options.max_area() + 0.02);
    ASSERT_GT(box.second, 0);
    const double aspect = static_cast<double>(box.first) / box.second;
    EXPECT_GE(aspect, options.min_aspect() * 0.7);
    EXPECT_LE(aspect, options.max_aspect() / 0.7);
  }
  // Another value, in a narrower range.
  const auto z = resnet::data::random_erasing(
      x,
      ErasingOptions()
          .p(1)
          .min_area(0.1)
          .max_area(0.1)
          .min_aspect(1)
          .max_aspect(1)
          .value(-3),
      rng);
  for (const auto& box : erased_boxes(z, -3)) {
    EXPECT_EQ(box.first, 10); // round(sqrt(102.4))
    EXPECT_EQ(box.second, 10);
  }
}

TEST(Augment, RandomErasingRate) {
  torch::manual_seed(0);
  const auto x = torch::rand({2000, 1, 16, 16}) + 1;
  std::mt19937_64 rng(6);
  const auto y = resnet::data::random_erasing(x, ErasingOptions(), rng);
  const double rate =
      y.eq(0).flatten(1).any(1).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(rate, 0.25, 0.04);
  std::mt19937_64 again(6);
  EXPECT_TRUE(torch::equal(
      resnet::data::random_erasing(x, ErasingOptions(), again), y));
}

TEST(Augment, MixupBlendsWithTheReversedBatch) {
  torch::manual_seed(0);
  const auto x = torch::randn({9, 3, 8, 8});
  const auto t = torch::randint(0, 5, {9}, torch::kLong);
  const auto one_hot = torch::one_hot(t, 5).to(torch::kFloat);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 5; ++i) {
    const auto m =
        resnet::data::mixup_cutmix(x, t, 5, MixOptions().cutmix_alpha(0), rng);
    EXPECT_GE(m.lambda, 0);
    EXPECT_LE(m.lambda, 1);
    EXPECT_TRUE(torch::allclose(
        m.images, m.lambda * x + (1 - m.lambda) * x.flip({0}), 1e-5, 1e-6));
    ASSERT_EQ(m.targets.sizes(), (std::vector<int64_t>{9, 5}));
    EXPECT_EQ(m.targets.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::allclose(m.targets.sum(1), torch::ones({9})));
    EXPECT_TRUE(torch::allclose(
        m.targets, m.lambda * one_hot + (1 - m.lambda) * one_hot.flip({0})));
  }
  // Never mixed: the batch itself and one-hot (smoothed) targets.
  const auto same = resnet::data::mixup_cutmix(
      x, t, 5, MixOptions().probability(0).label_smoothing(0.1), rng);
  EXPECT_EQ(same.lambda, 1);
  EXPECT_TRUE(torch::equal(same.images, x));
  EXPECT_TRUE(torch::allclose(same.targets, one_hot * 0.9 + 0.02));
  EXPECT_TRUE(torch::allclose(same.targets.sum(1), torch::ones({9})));
}

TEST(Augment, CutmixPastesABoxWithItsExactArea) {
  torch::manual_seed(0);
  const auto x = torch::rand({6, 2, 16, 12}) + 1;
  const auto t = torch::arange(6, torch::kLong);
  const auto one_hot = torch::one_hot(t, 6).to(torch::kFloat);
  std::mt19937_64 rng(8);
  int boxes = 0;
  for (int i = 0; i < 20; ++i) {
    const auto m = resnet::data::mixup_cutmix(
        x, t, 6, MixOptions().mixup_alpha(0).label_smoothing(0.2), rng);
    const auto changed = m.images.ne(x).any(1); // [N, H, W]
    // Pixels either keep theirs or take the reversed batch's (which differ
    // everywhere), in one box at the same place in every image.
    EXPECT_TRUE(torch::equal(
        torch::where(changed.unsqueeze(1), x.flip({0}), x), m.images));
    const auto box = changed[0];
    for (int64_t k = 1; k < 6; ++k) {
      EXPECT_TRUE(torch::equal(changed[k], box));
    }
    const auto r = box.any(1).nonzero();
    const auto c = box.any(0).nonzero();
    const int64_t area = box.sum().item<int64_t>();
    if (area > 0) {
      ++boxes;
      EXPECT_EQ(area, r.numel() * c.numel()) << "not a rectangle";
    }
    EXPECT_DOUBLE_EQ(m.lambda, 1 - static_cast<double>(area) / (16 * 12));
    const auto smooth = one_hot * 0.8 + 0.2 / 6;
    EXPECT_TRUE(torch::allclose(
        m.targets, m.lambda * smooth + (1 - m.lambda) * smooth.flip({0})));
    EXPECT_TRUE(torch::allclose(m.targets.sum(1), torch::ones({6})));
  }
  EXPECT_GT(boxes, 10);
}

TEST(Augment, MixupCutmixSwitchesAndReplays) {
  torch::manual_seed(0);
  const auto x = torch::rand({4, 1, 8, 8}) + 1;
  const auto t = torch::tensor({0, 1, 2, 3}, torch::kLong);
  int cutmix = 0, mixup = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    const auto m = resnet::data::mixup_cutmix(x, t, 4, MixOptions(), a);
    const auto again = resnet::data::mixup_cutmix(x, t, 4, MixOptions(), b);
    EXPECT_TRUE(torch::equal(m.images, again.images));
    EXPECT_TRUE(torch::equal(m.targets, again.targets));
    EXPECT_EQ(m.lambda, again.lambda);
    // Cutmix leaves some pixels exactly as they were; mixup none.
    if (m.images.eq(x).any().item<bool>()) {
      ++cutmix;
    } else {
      ++mixup;
    }
  }
  EXPECT_GT(cutmix, 8);
  EXPECT_GT(mixup, 8);
}

TEST(Augment, SoftCrossEntropyMatchesCrossEntropy) {
  torch::manual_seed(0);
  namespace F = torch::nn::functional;
  const auto logits = torch::randn({16, 10});
  const auto t = torch::randint(0, 10, {16}, torch::kLong);
  const auto one_hot = resnet::data::smoothed_one_hot(t, 10);
  EXPECT_TRUE(torch::allclose(
      resnet::soft_cross_entropy(logits, one_hot),
      F::cross_entropy(logits, t)));
  const auto smooth = resnet::data::smoothed_one_hot(t, 10, 0.1);
  EXPECT_TRUE(torch::allclose(
      resnet::soft_cross_entropy(logits, smooth),
      F::cross_entropy(
          logits, t, F::CrossEntropyFuncOptions().label_smoothing(0.1))));
  EXPECT_TRUE(contains(
      error_of(
          [&] { resnet::soft_cross_entropy(logits, one_hot.slice(1, 0, 9)); }),
      "resnet: soft_cross_entropy expects soft targets [16, 10] like "
      "the logits, got Float [16, 9]"));
}

TEST(Augment, CrossEntropyTakesClassIndicesOrSoftTargets) {
  torch::manual_seed(0);
  namespace F = torch::nn::functional;
  const auto logits = torch::randn({8, 5});
  const auto t = torch::randint(0, 5, {8}, torch::kLong);
  EXPECT_TRUE(torch::allclose(
      resnet::cross_entropy(logits, t, 0.2),
      F::cross_entropy(
          logits, t, F::CrossEntropyFuncOptions().label_smoothing(0.2))));
  EXPECT_TRUE(torch::allclose(
      resnet::cross_entropy(logits, t), F::cross_entropy(logits, t)));
  // Soft targets carry their own smoothing; the argument is not applied again.
  const auto soft = resnet::data::smoothed_one_hot(t, 5, 0.2);
  EXPECT_TRUE(torch::allclose(
      resnet::cross_entropy(logits, soft, 0.2),
      resnet::soft_cross_entropy(logits, soft)));
}

TEST(Augment, RejectsBadArguments) {
  const auto x = torch::rand({2, 1, 4, 4});
  const auto t = torch::tensor({0, 3}, torch::kLong);
  std::mt19937_64 rng(0);
  EXPECT_TRUE(contains(
      error_of([&] { resnet::data::random_crop(x[0], 1, rng); }),
      "resnet: random_crop expects a floating-point batch [N, C, H, W], "
      "got Float [1, 4, 4]"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::data::random_crop(x.to(torch::kByte), 1, rng); }),
      "floating-point batch"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::data::random_crop(x, -1, rng); }),
      "padding >= 0, got -1"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::data::random_horizontal_flip(x, 1.5, rng); }),
      "random_horizontal_flip expects a probability in [0, 1], got 1.5"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::random_erasing(x, ErasingOptions().p(-0.1), rng);
      }),
      "probability in [0, 1]"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::random_erasing(
            x, ErasingOptions().min_area(0.5).max_area(0.2), rng);
      }),
      "0 < min_area <= max_area <= 1, got 0.5 and 0.2"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::random_erasing(
            x, ErasingOptions().min_aspect(2).max_aspect(1), rng);
      }),
      "0 < min_aspect <= max_aspect, got 2 and 1"));
  EXPECT_TRUE(contains(
      error_of([&] { resnet::data::mixup_cutmix(x, t, 3, MixOptions(), rng); }),
      "resnet: mixup_cutmix expects targets in [0, 3), got values "
      "from 0 to 3"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::mixup_cutmix(x, t.slice(0, 0, 1), 4, MixOptions(), rng);
      }),
      "integer targets [2], got Long [1]"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::mixup_cutmix(x, t, 4, MixOptions().probability(2), rng);
      }),
      "probability in [0, 1], got 2"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::mixup_cutmix(x, t, 4, MixOptions().mixup_alpha(-1), rng);
      }),
      "alphas >= 0"));
  EXPECT_TRUE(contains(
      error_of([&] {
        resnet::data::mixup_cutmix(
            x, t, 4, MixOptions().label_smoothing(1), rng);
      }),
      "label_smoothing in [0, 1), got 1"));
}

TEST(Augment, SameResultOnEveryDevice) {
  torch::manual_seed(0);
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device";
  }
  const torch::Device cuda(torch::kCUDA, 0);
  const auto x = torch::rand({64, 3, 16, 16});
  const auto t = torch::randint(0, 10, {64}, torch::kLong);
  const auto run = [&](const torch::Device& device) {
    std::mt19937_64 rng(12);
    auto y = x.to(device);
    y = resnet::data::random_crop(y, 4, rng);
    y = resnet::data::random_horizontal_flip(y, 0.5, rng);
    y = resnet::data::random_erasing(y, ErasingOptions().p(0.5), rng);
    auto m = resnet::data::mixup_cutmix(y, t.to(device), 10, MixOptions(), rng);
    return std::make_pair(m.images.cpu(), m.targets.cpu());
  };
  const auto a = run(torch::kCPU);
  const auto b = run(cuda);
  EXPECT_TRUE(torch::allclose(a.first, b.first, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(a.second, b.second, 1e-6, 1e-6));
}

} // namespace

TEST(Augment, PolicyAppliesEachStepInOrderAndReplays) {
  using resnet::data::AugmentOptions;
  torch::manual_seed(0);
  const auto x = torch::rand({16, 1, 8, 8});
  const auto y = torch::randint(0, 10, {16}, torch::kLong);
  // Everything off: the batch and its targets as they were.
  std::mt19937_64 rng(1);
  const auto off = AugmentOptions().padding(0).flip(0).erasing(
      resnet::data::ErasingOptions().p(0));
  const auto [same_x, same_y] = resnet::data::augment(x, y, 10, off, rng);
  EXPECT_TRUE(torch::equal(same_x, x));
  EXPECT_TRUE(torch::equal(same_y, y));
  // The default policy changes images, keeps class targets, and is the
  // composition of its steps drawn from one generator.
  std::mt19937_64 a(7), b(7);
  const auto [ax, ay] = resnet::data::augment(x, y, 10, AugmentOptions(), a);
  auto bx = resnet::data::random_crop(x, 4, b);
  bx = resnet::data::random_horizontal_flip(bx, 0.5, b);
  bx = resnet::data::random_erasing(bx, resnet::data::ErasingOptions(), b);
  EXPECT_FALSE(torch::equal(ax, x));
  EXPECT_TRUE(torch::equal(ax, bx));
  EXPECT_TRUE(torch::equal(ay, y));
  // Mixing gives soft targets [N, classes] that sum to 1, and replays.
  const auto mixing = AugmentOptions().mix(MixOptions().mixup_alpha(0.8));
  std::mt19937_64 c(3), d(3);
  const auto [cx, cy] = resnet::data::augment(x, y, 10, mixing, c);
  const auto [dx, dy] = resnet::data::augment(x, y, 10, mixing, d);
  ASSERT_EQ(cy.sizes(), (std::vector<int64_t>{16, 10}));
  EXPECT_TRUE(torch::allclose(cy.sum(1), torch::ones({16})));
  EXPECT_TRUE(torch::equal(cx, dx));
  EXPECT_TRUE(torch::equal(cy, dy));
}

} // namespace test_loader
