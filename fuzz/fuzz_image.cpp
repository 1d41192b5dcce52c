// Image decoding (libpng and libjpeg-turbo behind resnet::decode_image) in
// every channel mode, then the classifier's preprocessing.
#include "fuzz_support.h"

#include <resnet/data/image.h>
#include <resnet/data/transforms.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (int channels : {0, 1, 3}) {
    resnet_fuzz::expect_clean_error([&] {
      // A lower pixel limit than the default keeps each run small.
      const auto image =
          resnet::decode_image(data, size, channels, "fuzz", 1 << 22);
      if (channels == 3) {
        (void)resnet::preprocess(image, resnet::Preprocess().resize(16).crop(8))
            .sum();
      }
    });
  }
  return 0;
}
