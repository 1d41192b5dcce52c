#pragma once

// Command lines from fuzz input: arguments separated by NUL bytes, at most
// 64 of them. RESNET_FUZZ_PARSE(argc, argv) is the program's parser.

#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> words{"program"};
  std::string word;
  for (size_t i = 0; i < size && words.size() < 64; ++i) {
    if (data[i] == 0) {
      words.push_back(word);
      word.clear();
    } else {
      word.push_back(static_cast<char>(data[i]));
    }
  }
  if (!word.empty() && words.size() < 64) {
    words.push_back(word);
  }
  std::vector<char*> argv;
  for (auto& w : words) {
    argv.push_back(w.data());
  }
  argv.push_back(nullptr);
  try {
    RESNET_FUZZ_PARSE(static_cast<int>(words.size()), argv.data());
  } catch (const UsageError&) {
  } catch (const c10::Error&) {
  }
  return 0;
}
