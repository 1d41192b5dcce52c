// The registry of published weights (<resnet/hub/registry.h>) and the
// ImageNet class names (<resnet/hub/imagenet_classes.h>) against what the
// installed torchvision and timm say of themselves
// (tests/python/dump_pretrained_tables.py): every row matches, and every
// weight they publish for the library's architectures is a row. Also the
// lookups, the aliases and the error for an unknown name. Needs no LibTorch:
// the library's architecture names are read from the X-macro rows of
// include/resnet/model/models.h.

#include <resnet/hub/imagenet_classes.h>
#include <resnet/hub/registry.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using nlohmann::json;
using resnet::hub::find_weights;
using resnet::hub::kPublishedWeights;
using resnet::hub::kWeightsAliases;
using resnet::hub::PublishedWeights;
using resnet::hub::WeightsSource;

// Rows a torchvision newer than the oldest one the project supports (0.14,
// Debian 12's) added, with the version that added them: an older torchvision
// may lack these and only these. None so far: torchvision 0.14 already has
// every ResNet weight that later releases publish.
const std::map<std::string, std::string> kTorchVisionRowsSince = {};

// The library's architectures, name -> family, from the X-macro rows
// "X(resnet50, TorchVision, ..." of models.h.
const std::map<std::string, std::string>& library_architectures() {
  static const std::map<std::string, std::string> archs = [] {
    std::map<std::string, std::string> out;
    const std::string path = RESNET_SOURCE_DIR "/include/resnet/model/models.h";
    std::ifstream in(path);
    EXPECT_TRUE(in) << "cannot open " << path;
    const std::regex row(R"(^\s*X\(([a-z0-9_]+),\s*([A-Za-z]+),)");
    std::string line;
    std::smatch m;
    while (std::getline(in, line)) {
      if (std::regex_search(line, m, row)) {
        out.emplace(m[1], m[2]);
      }
    }
    EXPECT_GE(out.size(), 30u) << "too few architectures read from " << path;
    return out;
  }();
  return archs;
}

// Runs tests/python/dump_pretrained_tables.py for the library's
// architectures and parses what it prints; also keeps it in the work folder.
const json& published() {
  static const json table = []() -> json {
    std::string command = "'" RESNET_PYTHON "' '" RESNET_SOURCE_DIR
                          "/tests/python/dump_pretrained_tables.py'";
    for (const auto& [name, family] : library_architectures()) {
      // Names are [a-z0-9_]+ (the pattern that read them), safe in a command.
      command += " " + name;
    }
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
      ADD_FAILURE() << "cannot run " << command;
      return json::object();
    }
    std::string out;
    std::array<char, 4096> buffer{};
    size_t n = 0;
    while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
      out.append(buffer.data(), n);
    }
    const int status = pclose(pipe);
    if (status != 0) {
      ADD_FAILURE() << command << " failed (status " << status << ")";
      return json::object();
    }
    std::filesystem::create_directories(RESNET_TEST_WORK_DIR);
    std::ofstream(RESNET_TEST_WORK_DIR "/pretrained_tables.json") << out;
    return json::parse(out);
  }();
  return table;
}

// published()[section][key], or null where the script printed nothing.
const json& part(const char* section, const char* key) {
  static const json none;
  const auto& t = published();
  return t.contains(section) && t[section].contains(key) ? t[section][key]
                                                         : none;
}

const json& torchvision_weights() {
  return part("torchvision", "weights");
}

const json& timm_pretrained() {
  return part("timm", "pretrained");
}

std::string versions() {
  const auto& t = published();
  return t.contains("versions") ? t["versions"].dump() : "(no versions)";
}

// Whether dotted version `a` ("0.14.1a0") is older than `b` ("0.15").
bool older(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  for (int part = 0; part < 3; ++part) {
    int x = 0, y = 0;
    char dot = 0;
    sa >> x;
    sb >> y;
    if (x != y) {
      return x < y;
    }
    sa >> dot;
    sb >> dot;
  }
  return false;
}

const json* find_by_name(const json& list, std::string_view name) {
  for (const auto& item : list) {
    if (item["name"].get<std::string>() == name) {
      return &item;
    }
  }
  return nullptr;
}

// timm's ImageNet-1k classifiers hosted under timm/ on the Hugging Face Hub.
bool hosted_imagenet_classifier(const json& tag) {
  return tag["hf_hub_id"].is_string() &&
      tag["hf_hub_id"].get<std::string>() ==
      "timm/" + tag["name"].get<std::string>() &&
      tag["num_classes"].is_number() && tag["num_classes"].get<int>() == 1000;
}

std::string message_of(std::string_view name) {
  try {
    resnet::hub::weights_or_throw(name);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "weights_or_throw(\"" << name << "\") did not throw";
  return {};
}

TEST(HubRegistry, TorchVisionRowsMatchTorchVision) {
  const auto& weights = torchvision_weights();
  ASSERT_FALSE(weights.empty()) << versions();
  const auto installed = part("versions", "torchvision").get<std::string>();
  int rows = 0;
  for (const auto& row : kPublishedWeights) {
    if (row.source != WeightsSource::TorchVision) {
      continue;
    }
    ++rows;
    SCOPED_TRACE(std::string(row.name));
    const json* w = find_by_name(weights, row.name);
    if (w == nullptr) {
      const auto since = kTorchVisionRowsSince.find(std::string(row.name));
      EXPECT_TRUE(
          since != kTorchVisionRowsSince.end() &&
          older(installed, since->second))
          << "torchvision " << installed << " publishes no " << row.name;
      continue;
    }
    EXPECT_EQ(row.arch, (*w)["arch"].get<std::string>());
    EXPECT_EQ(row.url, (*w)["url"].get<std::string>());
    EXPECT_EQ(row.file, (*w)["file"].get<std::string>());
    EXPECT_EQ(row.sha256_prefix, (*w)["sha256_prefix"].get<std::string>());
    EXPECT_EQ(row.acc1, (*w)["acc1"].get<double>());
    EXPECT_EQ(row.acc5, (*w)["acc5"].get<double>());
    EXPECT_EQ(row.num_params, (*w)["num_params"].get<int64_t>());
    EXPECT_EQ(row.num_classes, (*w)["num_classes"].get<int64_t>());
    EXPECT_TRUE((*w)["same_categories"].get<bool>());
    EXPECT_EQ(row.resize, (*w)["resize"].get<int64_t>());
    EXPECT_EQ(row.crop, (*w)["crop"].get<int64_t>());
    EXPECT_EQ(row.interpolation, (*w)["interpolation"].get<std::string>());
    EXPECT_EQ(
        std::vector<double>(row.mean.begin(), row.mean.end()),
        (*w)["mean"].get<std::vector<double>>());
    EXPECT_EQ(
        std::vector<double>(row.std.begin(), row.std.end()),
        (*w)["std"].get<std::vector<double>>());
    EXPECT_TRUE(row.hf_repo.empty());
  }
  EXPECT_GE(rows, 17);
}

TEST(HubRegistry, EveryTorchVisionWeightIsARow) {
  const auto& weights = torchvision_weights();
  ASSERT_FALSE(weights.empty()) << versions();
  for (const auto& w : weights) {
    const auto name = w["name"].get<std::string>();
    const auto* row = find_weights(name);
    EXPECT_TRUE(row != nullptr && row->name == name)
        << "torchvision publishes " << name << " (" << versions()
        << "), the registry has no row for it";
    if (row != nullptr) {
      EXPECT_EQ(row->source, WeightsSource::TorchVision) << name;
    }
  }
}

TEST(HubRegistry, DefaultAliasesFollowTorchVision) {
  const auto& defaults = part("torchvision", "defaults");
  ASSERT_TRUE(defaults.is_object() && !defaults.empty()) << versions();
  for (const auto& [arch, version] : defaults.items()) {
    const auto alias = arch + ".DEFAULT";
    const auto* row = find_weights(alias);
    ASSERT_NE(row, nullptr) << alias;
    EXPECT_EQ(row->name, arch + "." + version.get<std::string>()) << alias;
  }
  for (const auto& alias : kWeightsAliases) {
    const auto arch = std::string(resnet::hub::detail::arch_of(alias.name));
    EXPECT_TRUE(defaults.contains(arch))
        << alias.name << ": torchvision has no DEFAULT for " << arch;
  }
}

TEST(HubRegistry, TimmRowsMatchTimm) {
  const auto& tags = timm_pretrained();
  ASSERT_FALSE(tags.empty()) << versions();
  int rows = 0;
  for (const auto& row : kPublishedWeights) {
    if (row.source != WeightsSource::TimmHub) {
      continue;
    }
    ++rows;
    SCOPED_TRACE(std::string(row.name));
    EXPECT_EQ(row.hf_repo, "timm/" + std::string(row.name));
    EXPECT_EQ(row.num_classes, 1000);
    EXPECT_TRUE(row.url.empty() && row.file.empty());
    const json* tag = find_by_name(tags, row.name);
    ASSERT_NE(tag, nullptr)
        << "timm (" << versions() << ") has no " << row.name;
    EXPECT_EQ(row.arch, (*tag)["arch"].get<std::string>());
    EXPECT_TRUE(hosted_imagenet_classifier(*tag))
        << "timm says hf_hub_id " << (*tag)["hf_hub_id"].dump()
        << ", num_classes " << (*tag)["num_classes"].dump();
  }
  EXPECT_GE(rows, 102);
}

TEST(HubRegistry, EveryHostedTimmClassifierIsARow) {
  const auto& tags = timm_pretrained();
  ASSERT_FALSE(tags.empty()) << versions();
  int hosted = 0;
  for (const auto& tag : tags) {
    const auto name = tag["name"].get<std::string>();
    const auto* row = find_weights(name);
    if (!hosted_imagenet_classifier(tag)) {
      EXPECT_EQ(row, nullptr)
          << name << " is not an ImageNet-1k classifier hosted under timm/";
      continue;
    }
    ++hosted;
    EXPECT_TRUE(row != nullptr && row->source == WeightsSource::TimmHub)
        << "timm publishes " << name << " on the Hub (" << versions()
        << "), the registry has no row for it";
  }
  EXPECT_GE(hosted, 102);
}

TEST(HubRegistry, ClassNamesAreTorchVisions) {
  const auto& categories = part("torchvision", "categories");
  ASSERT_EQ(categories.size(), resnet::hub::kImageNetClasses.size());
  for (size_t i = 0; i < categories.size(); ++i) {
    EXPECT_EQ(
        resnet::hub::kImageNetClasses[i], categories[i].get<std::string>())
        << "class " << i;
  }
}

TEST(HubRegistry, RowsNameLibraryArchitectures) {
  const auto& archs = library_architectures();
  const std::regex sha(R"([0-9a-f]{8,})");
  for (const auto& row : kPublishedWeights) {
    SCOPED_TRACE(std::string(row.name));
    const auto arch = archs.find(std::string(row.arch));
    ASSERT_TRUE(arch != archs.end()) << row.arch << " is no architecture";
    EXPECT_NE(arch->second, "CifarPaper");
    EXPECT_EQ(
        row.name.substr(0, row.arch.size() + 1), std::string(row.arch) + ".");
    if (row.source == WeightsSource::TorchVision) {
      const std::string prefix = "https://download.pytorch.org/models/";
      EXPECT_EQ(row.url.substr(0, prefix.size()), prefix);
      EXPECT_EQ(row.url.substr(prefix.size()), row.file);
      EXPECT_TRUE(std::regex_match(std::string(row.sha256_prefix), sha));
      EXPECT_EQ(
          row.file,
          std::string(row.arch) + "-" + std::string(row.sha256_prefix) +
              ".pth");
    }
  }
}

TEST(HubRegistry, NamesAreUniqueAndSorted) {
  const auto names = resnet::hub::pretrained_names();
  EXPECT_EQ(names.size(), kPublishedWeights.size() + kWeightsAliases.size());
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
  for (const auto name : names) {
    EXPECT_NE(find_weights(name), nullptr) << name;
  }
}

TEST(HubRegistry, AliasesResolve) {
  const auto* row = find_weights("resnet50.DEFAULT");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->name, "resnet50.IMAGENET1K_V2");
  EXPECT_EQ(row->file, "resnet50-11ad3fa6.pth");
  EXPECT_EQ(&resnet::hub::weights_or_throw("resnet50.DEFAULT"), row);
  EXPECT_EQ(
      find_weights("resnext101_64x4d.DEFAULT")->name,
      "resnext101_64x4d.IMAGENET1K_V1");
  for (const auto& alias : kWeightsAliases) {
    ASSERT_NE(find_weights(alias.name), nullptr) << alias.name;
    EXPECT_EQ(find_weights(alias.name)->name, alias.target);
  }
  const auto& timm = resnet::hub::weights_or_throw("resnet50.a1_in1k");
  EXPECT_EQ(timm.hf_repo, "timm/resnet50.a1_in1k");
  EXPECT_EQ(timm.arch, "resnet50");
  // A bare architecture name is no name: torchvision and timm differ on it.
  EXPECT_EQ(find_weights("resnet50"), nullptr);
  EXPECT_EQ(find_weights("resnet50.imagenet1k_v2"), nullptr);
  EXPECT_EQ(find_weights(""), nullptr);
}

TEST(HubRegistry, UnknownNamesSuggestTheClosest) {
  const auto has = [](const std::string& message, const std::string& part) {
    return message.find(part) != std::string::npos;
  };
  for (const auto& [wrong, right] : std::map<std::string, std::string>{
           {"resnet50.imagenet1k_v2", "resnet50.IMAGENET1K_V2"},
           {"resnet5O.a1_in1k", "resnet50.a1_in1k"},
           {"resnet50.a1_in1", "resnet50.a1_in1k"},
           {"seresnext26d_32x4d.bt_in1k_", "seresnext26d_32x4d.bt_in1k"},
           {"wide_resnet50_2.default", "wide_resnet50_2.DEFAULT"},
           {"resnet50", "resnet50.DEFAULT"},
           {"ecaresnet50t", "ecaresnet50t.a1_in1k"},
       }) {
    const auto message = message_of(wrong);
    EXPECT_EQ(message.rfind("resnet: ", 0), 0u) << message;
    EXPECT_TRUE(has(message, "\"" + wrong + "\"")) << message;
    EXPECT_TRUE(has(message, right)) << wrong << ": " << message;
    EXPECT_TRUE(has(message, "resnet::hub::pretrained_names()")) << message;
  }
  EXPECT_EQ(
      resnet::hub::closest_pretrained_names("resnet50.imagenet1k_v1", 1),
      std::vector<std::string_view>{"resnet50.IMAGENET1K_V1"});
  // Bounded whatever comes.
  const auto message = message_of(std::string(100000, 'x'));
  EXPECT_LT(message.size(), 400u) << message;
}

} // namespace
