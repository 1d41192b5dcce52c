#pragma once

// The published weights of the library's architectures, as data: every
// ImageNet-1k version torchvision publishes on download.pytorch.org and every
// ImageNet-1k classifier timm hosts on the Hugging Face Hub under `timm/`,
// one row each, looked up by the name the publishing project gives it.
// Standard library only: no LibTorch, no network.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace resnet::hub {

/// Who publishes a set of weights, and so how it is fetched and named.
enum class WeightsSource {
  /// torchvision: a `.pth` file on https://download.pytorch.org/models/,
  /// named `<arch>.<version>` ("resnet50.IMAGENET1K_V2"), its preprocessing
  /// in the row.
  TorchVision,
  /// timm: a Hugging Face Hub repository `timm/<arch>.<tag>`, named
  /// `<arch>.<tag>` ("resnet50.a1_in1k"); its preprocessing is in the
  /// repository's config.json.
  TimmHub,
};

/// One published set of weights. The torchvision fields are empty (zero) in
/// timm's rows and `hf_repo` is empty in torchvision's.
struct PublishedWeights {
  /// The name as the publishing project spells it: torchvision's
  /// "resnet50.IMAGENET1K_V2", timm's "resnet50.a1_in1k".
  std::string_view name;
  /// The library's architecture (`resnet::create`'s name), the part of
  /// `name` before the dot.
  std::string_view arch;
  /// Who publishes it.
  WeightsSource source;
  /// torchvision: the download address.
  std::string_view url;
  /// torchvision: the file name, the last part of `url`, which torch.hub
  /// keeps in its cache.
  std::string_view file;
  /// torchvision: the leading hex digits of the file's SHA-256, the part of
  /// `file` after its last '-' and before ".pth", which torch.hub checks.
  std::string_view sha256_prefix;
  /// torchvision: top-1 accuracy on ImageNet-1k's validation set, percent.
  double acc1;
  /// torchvision: top-5 accuracy on ImageNet-1k's validation set, percent.
  double acc5;
  /// torchvision: number of parameters.
  int64_t num_params;
  /// torchvision: the shorter side is resized to this many pixels.
  int64_t resize;
  /// torchvision: then the centre square of this side is kept.
  int64_t crop;
  /// torchvision: the resize's interpolation, "bilinear" or "bicubic".
  std::string_view interpolation;
  /// torchvision: per-channel (RGB) mean subtracted from pixels in [0, 1].
  std::array<double, 3> mean;
  /// torchvision: per-channel (RGB) divisor applied after the mean.
  std::array<double, 3> std;
  /// Number of classes of the classifier: 1000 (ImageNet-1k) in every row.
  int64_t num_classes;
  /// timm: the Hugging Face Hub repository, "timm/<name>".
  std::string_view hf_repo;
};

/// A second name for a row: torchvision's `DEFAULT`, which points at the
/// version torchvision recommends for an architecture.
struct WeightsAlias {
  /// The alias, "resnet50.DEFAULT".
  std::string_view name;
  /// The row's name it stands for, "resnet50.IMAGENET1K_V2".
  std::string_view target;
};

} // namespace resnet::hub

namespace resnet::hub::detail {

/// "resnet50" of "resnet50.a1_in1k".
constexpr std::string_view arch_of(std::string_view name) {
  return name.substr(0, name.find('.'));
}

/// "resnet50-11ad3fa6.pth" of "https://download.pytorch.org/models/...".
constexpr std::string_view file_of(std::string_view url) {
  return url.substr(url.rfind('/') + 1);
}

/// "11ad3fa6" of "resnet50-11ad3fa6.pth".
constexpr std::string_view sha256_prefix_of(std::string_view file) {
  const auto dash = file.rfind('-');
  const auto dot = file.rfind('.');
  return dash == std::string_view::npos || dot == std::string_view::npos ||
          dot < dash
      ? std::string_view{}
      : file.substr(dash + 1, dot - dash - 1);
}

/// A torchvision row: ImageNet's mean and std, bilinear resizing.
constexpr PublishedWeights torchvision(
    std::string_view name,
    std::string_view url,
    double acc1,
    double acc5,
    int64_t num_params,
    int64_t resize,
    int64_t crop) {
  return PublishedWeights{
      name,
      arch_of(name),
      WeightsSource::TorchVision,
      url,
      file_of(url),
      sha256_prefix_of(file_of(url)),
      acc1,
      acc5,
      num_params,
      resize,
      crop,
      "bilinear",
      {0.485, 0.456, 0.406},
      {0.229, 0.224, 0.225},
      1000,
      {}};
}

/// A timm row from its Hub repository "timm/<name>".
constexpr PublishedWeights timm(std::string_view hf_repo) {
  const auto name = hf_repo.substr(hf_repo.find('/') + 1);
  return PublishedWeights{
      name,
      arch_of(name),
      WeightsSource::TimmHub,
      {},
      {},
      {},
      0.0,
      0.0,
      0,
      0,
      0,
      {},
      {},
      {},
      1000,
      hf_repo};
}

} // namespace resnet::hub::detail

namespace resnet::hub {

/// Every published set of weights, one row each: torchvision's versions,
/// then timm's ImageNet-1k classifiers on the Hugging Face Hub. Adding one
/// is one row. tests/test_hub_registry.cpp checks the rows against what
/// torchvision and timm themselves say (tests/python/dump_pretrained_tables.py)
/// and that none is missing.
// clang-format off
inline constexpr std::array kPublishedWeights = {
    // torchvision: name, url, acc@1, acc@5, parameters, resize, crop.
    detail::torchvision("resnet18.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth", 69.758, 89.078, 11689512, 256, 224),
    detail::torchvision("resnet34.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet34-b627a593.pth", 73.314, 91.42, 21797672, 256, 224),
    detail::torchvision("resnet50.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet50-0676ba61.pth", 76.13, 92.862, 25557032, 256, 224),
    detail::torchvision("resnet50.IMAGENET1K_V2", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", 80.858, 95.434, 25557032, 232, 224),
    detail::torchvision("resnet101.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet101-63fe2227.pth", 77.374, 93.546, 44549160, 256, 224),
    detail::torchvision("resnet101.IMAGENET1K_V2", "https://download.pytorch.org/models/resnet101-cd907fc2.pth", 81.886, 95.78, 44549160, 232, 224),
    detail::torchvision("resnet152.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet152-394f9c45.pth", 78.312, 94.046, 60192808, 256, 224),
    detail::torchvision("resnet152.IMAGENET1K_V2", "https://download.pytorch.org/models/resnet152-f82ba261.pth", 82.284, 96.002, 60192808, 232, 224),
    detail::torchvision("resnext50_32x4d.IMAGENET1K_V1", "https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth", 77.618, 93.698, 25028904, 256, 224),
    detail::torchvision("resnext50_32x4d.IMAGENET1K_V2", "https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth", 81.198, 95.34, 25028904, 232, 224),
    detail::torchvision("resnext101_32x8d.IMAGENET1K_V1", "https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth", 79.312, 94.526, 88791336, 256, 224),
    detail::torchvision("resnext101_32x8d.IMAGENET1K_V2", "https://download.pytorch.org/models/resnext101_32x8d-110c445d.pth", 82.834, 96.228, 88791336, 232, 224),
    detail::torchvision("resnext101_64x4d.IMAGENET1K_V1", "https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth", 83.246, 96.454, 83455272, 232, 224),
    detail::torchvision("wide_resnet50_2.IMAGENET1K_V1", "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth", 78.468, 94.086, 68883240, 256, 224),
    detail::torchvision("wide_resnet50_2.IMAGENET1K_V2", "https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth", 81.602, 95.758, 68883240, 232, 224),
    detail::torchvision("wide_resnet101_2.IMAGENET1K_V1", "https://download.pytorch.org/models/wide_resnet101_2-32ee1156.pth", 78.848, 94.284, 126886696, 256, 224),
    detail::torchvision("wide_resnet101_2.IMAGENET1K_V2", "https://download.pytorch.org/models/wide_resnet101_2-d733dc28.pth", 82.51, 96.02, 126886696, 232, 224),
    // timm on the Hugging Face Hub: the repository, "timm/<name>".
    detail::timm("timm/resnet18.a1_in1k"),
    detail::timm("timm/resnet18.a2_in1k"),
    detail::timm("timm/resnet18.a3_in1k"),
    detail::timm("timm/resnet18.fb_ssl_yfcc100m_ft_in1k"),
    detail::timm("timm/resnet18.fb_swsl_ig1b_ft_in1k"),
    detail::timm("timm/resnet18.gluon_in1k"),
    detail::timm("timm/resnet18.tv_in1k"),
    detail::timm("timm/resnet34.a1_in1k"),
    detail::timm("timm/resnet34.a2_in1k"),
    detail::timm("timm/resnet34.a3_in1k"),
    detail::timm("timm/resnet34.bt_in1k"),
    detail::timm("timm/resnet34.gluon_in1k"),
    detail::timm("timm/resnet34.ra4_e3600_r224_in1k"),
    detail::timm("timm/resnet34.tv_in1k"),
    detail::timm("timm/resnet50.a1_in1k"),
    detail::timm("timm/resnet50.a1h_in1k"),
    detail::timm("timm/resnet50.a2_in1k"),
    detail::timm("timm/resnet50.a3_in1k"),
    detail::timm("timm/resnet50.am_in1k"),
    detail::timm("timm/resnet50.b1k_in1k"),
    detail::timm("timm/resnet50.b2k_in1k"),
    detail::timm("timm/resnet50.bt_in1k"),
    detail::timm("timm/resnet50.c1_in1k"),
    detail::timm("timm/resnet50.c2_in1k"),
    detail::timm("timm/resnet50.d_in1k"),
    detail::timm("timm/resnet50.fb_ssl_yfcc100m_ft_in1k"),
    detail::timm("timm/resnet50.fb_swsl_ig1b_ft_in1k"),
    detail::timm("timm/resnet50.gluon_in1k"),
    detail::timm("timm/resnet50.ra_in1k"),
    detail::timm("timm/resnet50.ram_in1k"),
    detail::timm("timm/resnet50.tv2_in1k"),
    detail::timm("timm/resnet50.tv_in1k"),
    detail::timm("timm/resnet101.a1_in1k"),
    detail::timm("timm/resnet101.a1h_in1k"),
    detail::timm("timm/resnet101.a2_in1k"),
    detail::timm("timm/resnet101.a3_in1k"),
    detail::timm("timm/resnet101.gluon_in1k"),
    detail::timm("timm/resnet101.tv2_in1k"),
    detail::timm("timm/resnet101.tv_in1k"),
    detail::timm("timm/resnet152.a1_in1k"),
    detail::timm("timm/resnet152.a1h_in1k"),
    detail::timm("timm/resnet152.a2_in1k"),
    detail::timm("timm/resnet152.a3_in1k"),
    detail::timm("timm/resnet152.gluon_in1k"),
    detail::timm("timm/resnet152.tv2_in1k"),
    detail::timm("timm/resnet152.tv_in1k"),
    detail::timm("timm/resnext50_32x4d.a1_in1k"),
    detail::timm("timm/resnext50_32x4d.a1h_in1k"),
    detail::timm("timm/resnext50_32x4d.a2_in1k"),
    detail::timm("timm/resnext50_32x4d.a3_in1k"),
    detail::timm("timm/resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k"),
    detail::timm("timm/resnext50_32x4d.fb_swsl_ig1b_ft_in1k"),
    detail::timm("timm/resnext50_32x4d.gluon_in1k"),
    detail::timm("timm/resnext50_32x4d.ra_in1k"),
    detail::timm("timm/resnext50_32x4d.tv2_in1k"),
    detail::timm("timm/resnext50_32x4d.tv_in1k"),
    detail::timm("timm/resnext101_32x8d.fb_ssl_yfcc100m_ft_in1k"),
    detail::timm("timm/resnext101_32x8d.fb_swsl_ig1b_ft_in1k"),
    detail::timm("timm/resnext101_32x8d.fb_wsl_ig1b_ft_in1k"),
    detail::timm("timm/resnext101_32x8d.tv2_in1k"),
    detail::timm("timm/resnext101_32x8d.tv_in1k"),
    detail::timm("timm/resnext101_64x4d.c1_in1k"),
    detail::timm("timm/resnext101_64x4d.gluon_in1k"),
    detail::timm("timm/resnext101_64x4d.tv_in1k"),
    detail::timm("timm/wide_resnet50_2.racm_in1k"),
    detail::timm("timm/wide_resnet50_2.tv2_in1k"),
    detail::timm("timm/wide_resnet50_2.tv_in1k"),
    detail::timm("timm/wide_resnet101_2.tv2_in1k"),
    detail::timm("timm/wide_resnet101_2.tv_in1k"),
    detail::timm("timm/resnet18d.ra2_in1k"),
    detail::timm("timm/resnet18d.ra4_e3600_r224_in1k"),
    detail::timm("timm/resnet26.bt_in1k"),
    detail::timm("timm/resnet26d.bt_in1k"),
    detail::timm("timm/resnet26t.ra2_in1k"),
    detail::timm("timm/resnet34d.ra2_in1k"),
    detail::timm("timm/resnet50c.gluon_in1k"),
    detail::timm("timm/resnet50s.gluon_in1k"),
    detail::timm("timm/resnet50d.a1_in1k"),
    detail::timm("timm/resnet50d.a2_in1k"),
    detail::timm("timm/resnet50d.a3_in1k"),
    detail::timm("timm/resnet50d.gluon_in1k"),
    detail::timm("timm/resnet50d.ra2_in1k"),
    detail::timm("timm/resnet50d.ra4_e3600_r224_in1k"),
    detail::timm("timm/resnet101d.gluon_in1k"),
    detail::timm("timm/resnet101d.ra2_in1k"),
    detail::timm("timm/resnet152d.gluon_in1k"),
    detail::timm("timm/resnet152d.ra2_in1k"),
    detail::timm("timm/seresnet50.a1_in1k"),
    detail::timm("timm/seresnet50.a2_in1k"),
    detail::timm("timm/seresnet50.a3_in1k"),
    detail::timm("timm/seresnet50.ra2_in1k"),
    detail::timm("timm/seresnext26d_32x4d.bt_in1k"),
    detail::timm("timm/seresnext50_32x4d.gluon_in1k"),
    detail::timm("timm/seresnext50_32x4d.racm_in1k"),
    detail::timm("timm/seresnext101_32x4d.gluon_in1k"),
    detail::timm("timm/ecaresnet26t.ra2_in1k"),
    detail::timm("timm/ecaresnet50d.miil_in1k"),
    detail::timm("timm/ecaresnet50t.a1_in1k"),
    detail::timm("timm/ecaresnet50t.a2_in1k"),
    detail::timm("timm/ecaresnet50t.a3_in1k"),
    detail::timm("timm/ecaresnet50t.ra2_in1k"),
    detail::timm("timm/ecaresnet101d.miil_in1k"),
};

/// torchvision's `DEFAULT` for each of its architectures: `<arch>.DEFAULT`
/// names the version torchvision's `<Arch>_Weights.DEFAULT` points at. An
/// alias is a name, not a row: `find_weights` returns the target's row.
inline constexpr std::array kWeightsAliases = {
    WeightsAlias{"resnet18.DEFAULT", "resnet18.IMAGENET1K_V1"},
    WeightsAlias{"resnet34.DEFAULT", "resnet34.IMAGENET1K_V1"},
    WeightsAlias{"resnet50.DEFAULT", "resnet50.IMAGENET1K_V2"},
    WeightsAlias{"resnet101.DEFAULT", "resnet101.IMAGENET1K_V2"},
    WeightsAlias{"resnet152.DEFAULT", "resnet152.IMAGENET1K_V2"},
    WeightsAlias{"resnext50_32x4d.DEFAULT", "resnext50_32x4d.IMAGENET1K_V2"},
    WeightsAlias{"resnext101_32x8d.DEFAULT", "resnext101_32x8d.IMAGENET1K_V2"},
    WeightsAlias{"resnext101_64x4d.DEFAULT", "resnext101_64x4d.IMAGENET1K_V1"},
    WeightsAlias{"wide_resnet50_2.DEFAULT", "wide_resnet50_2.IMAGENET1K_V2"},
    WeightsAlias{"wide_resnet101_2.DEFAULT", "wide_resnet101_2.IMAGENET1K_V2"},
};
// clang-format on

namespace detail {

/// The index of the row named exactly `name`, not through an alias;
/// kPublishedWeights.size() if none. (An index, not a pointer: compilers
/// that instrument globals, as AddressSanitizer does, cannot compare their
/// addresses in a constant expression.)
constexpr std::size_t row_index(std::string_view name) {
  for (std::size_t i = 0; i < kPublishedWeights.size(); ++i) {
    if (kPublishedWeights[i].name == name) {
      return i;
    }
  }
  return kPublishedWeights.size();
}

/// The row named exactly `name`, not through an alias; nullptr if none.
inline const PublishedWeights* find_row(std::string_view name) {
  const std::size_t i = row_index(name);
  return i < kPublishedWeights.size() ? &kPublishedWeights[i] : nullptr;
}

/// Every alias names an existing row and no alias is also a row's name.
constexpr bool aliases_resolve() {
  for (const auto& alias : kWeightsAliases) {
    if (row_index(alias.target) == kPublishedWeights.size() ||
        row_index(alias.name) != kPublishedWeights.size()) {
      return false;
    }
  }
  return true;
}

/// No two rows share a name.
constexpr bool names_unique() {
  for (std::size_t i = 0; i < kPublishedWeights.size(); ++i) {
    for (std::size_t j = i + 1; j < kPublishedWeights.size(); ++j) {
      if (kPublishedWeights[i].name == kPublishedWeights[j].name) {
        return false;
      }
    }
  }
  return true;
}

static_assert(names_unique(), "resnet: two published weights share a name");
static_assert(
    aliases_resolve(),
    "resnet: a weights alias names no row, or a row's name");

/// Longest name compared when suggesting names, so that the work and the
/// error message stay bounded whatever a caller passes.
inline constexpr std::size_t kMaxComparedName = 64;

/// Edit distance (insertions, deletions, substitutions) between `a` and `b`,
/// ignoring ASCII case.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  const auto lower = [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  };
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      const std::size_t substitute =
          diagonal + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
      diagonal = above;
    }
  }
  return row[b.size()];
}

} // namespace detail

/// Every name `find_weights` knows, the rows' and the aliases', sorted.
inline std::vector<std::string_view> pretrained_names() {
  std::vector<std::string_view> names;
  names.reserve(kPublishedWeights.size() + kWeightsAliases.size());
  for (const auto& row : kPublishedWeights) {
    names.push_back(row.name);
  }
  for (const auto& alias : kWeightsAliases) {
    names.push_back(alias.name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

/// The row of `name` as torchvision or timm spells it ("resnet50.a1_in1k",
/// "resnet50.IMAGENET1K_V2"), or of an alias ("resnet50.DEFAULT" gives
/// "resnet50.IMAGENET1K_V2"'s row); nullptr for any other name. Names are
/// case-sensitive, and a bare architecture name ("resnet50") is not one:
/// torchvision and timm each publish a different default for it.
inline const PublishedWeights* find_weights(std::string_view name) {
  if (const auto* row = detail::find_row(name)) {
    return row;
  }
  for (const auto& alias : kWeightsAliases) {
    if (alias.name == name) {
      return detail::find_row(alias.target);
    }
  }
  return nullptr;
}

/// The names closest to `name`, at most `count`, closest first: by edit
/// distance ignoring case; for a name without a dot (a bare architecture
/// name) by the distance to the names' architecture parts, so that
/// "resnet50" suggests "resnet50.DEFAULT" and resnet50's versions.
inline std::vector<std::string_view> closest_pretrained_names(
    std::string_view name,
    std::size_t count = 3) {
  name = name.substr(0, detail::kMaxComparedName);
  const bool bare = name.find('.') == std::string_view::npos;
  std::vector<std::pair<std::size_t, std::string_view>> scored;
  for (const auto candidate : pretrained_names()) {
    scored.emplace_back(
        detail::edit_distance(
            name, bare ? detail::arch_of(candidate) : candidate),
        candidate);
  }
  std::stable_sort(scored.begin(), scored.end(), [](auto& a, auto& b) {
    return a.first < b.first;
  });
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < scored.size() && i < count; ++i) {
    out.push_back(scored[i].second);
  }
  return out;
}

/// The row of `name` as `find_weights` finds it; for an unknown name throws
/// std::invalid_argument naming the closest known names and how to list
/// them all.
inline const PublishedWeights& weights_or_throw(std::string_view name) {
  if (const auto* row = find_weights(name)) {
    return *row;
  }
  std::string message = "resnet: no published weights named \"";
  message += name.substr(0, detail::kMaxComparedName);
  message += name.size() > detail::kMaxComparedName ? "...\"" : "\"";
  message += "; the closest names are ";
  const auto closest = closest_pretrained_names(name);
  for (std::size_t i = 0; i < closest.size(); ++i) {
    message += i == 0 ? "" : (i + 1 == closest.size() ? " and " : ", ");
    message += closest[i];
  }
  message += " (resnet::hub::pretrained_names() lists all ";
  message += std::to_string(kPublishedWeights.size() + kWeightsAliases.size());
  message += ")";
  throw std::invalid_argument(message);
}

} // namespace resnet::hub
