// Builds a network through the installed or added resnet package and checks
// one forward pass.

#include <resnet/resnet.h>

#include <iostream>

int main() {
  auto model = resnet::resnet20(resnet::ResNetOptions().num_classes(10));
  model->eval();
  torch::NoGradGuard no_grad;
  const auto out = model->forward(torch::randn({2, 3, 32, 32}));
  std::cout << "resnet " << resnet::kVersion << " output " << out.sizes()
            << "\n";
  return out.sizes() == torch::IntArrayRef{2, 10} ? 0 : 1;
}
