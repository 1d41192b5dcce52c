// Builds a ResNet on the best available device, runs one batch through it and
// prints what came out.
//
//   hello_resnet [ARCH] [IMAGE_SIZE]      e.g. hello_resnet resnet50 224
//
// Build it alone against an installed resnet package with a CMakeLists.txt of
//   find_package(resnet CONFIG REQUIRED)
//   add_executable(hello_resnet hello_resnet.cpp)
//   target_link_libraries(hello_resnet PRIVATE resnet::resnet)

#include <resnet/resnet.h>

#include <torch/torch.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) try {
  const std::string arch = argc > 1 ? argv[1] : "resnet18";
  const int64_t size = argc > 2 ? std::stoll(argv[2]) : 224;

  // Debian's LibTorch starts with one thread; use every core unless
  // OMP_NUM_THREADS says otherwise.
  resnet::set_num_threads();

  const torch::Device device = resnet::default_device();
  resnet::AnyResNet model = resnet::create(arch);
  model->to(device);
  model->eval();

  int64_t parameters = 0;
  for (const auto& p : model->parameters()) {
    parameters += p.numel();
  }

  torch::NoGradGuard no_grad;
  const auto images = torch::randn({2, 3, size, size}, device);
  const auto logits = model->forward(images);

  std::cout << "device:     " << device << "\n"
            << "arch:       " << arch << "\n"
            << "parameters: " << parameters << "\n"
            << "input:      " << images.sizes() << "\n"
            << "output:     " << logits.sizes() << "\n"
            << "top class:  " << logits.argmax(1) << "\n";
  return 0;
} catch (const c10::Error& e) {
  std::cerr << "hello_resnet: " << e.what_without_backtrace() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "hello_resnet: " << e.what() << "\n";
  return 1;
}
