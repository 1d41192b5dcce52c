#pragma once

// Writing a state dict as torch.save's zip archive, which
// `torch.load(weights_only=True)` accepts.

#include <resnet/io/detail/pickler.h>
#include <resnet/io/detail/torch_tensors.h>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace resnet::detail {

/// torch.save's zip archive of an OrderedDict name -> tensor, in the order
/// of `state`: protocol 2, only globals torch.load(weights_only=True)
/// allows, each tensor contiguous in its own storage.
inline std::vector<char> write_torch_save(
    const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  const uint16_t probe = 1;
  uint8_t first_byte = 0;
  std::memcpy(&first_byte, &probe, 1);
  TORCH_CHECK(first_byte == 1, "write_torch_save needs a little-endian host");

  std::vector<at::Tensor> tensors;
  Pickler p;
  p.global("collections", "OrderedDict");
  p.empty_tuple();
  p.reduce();
  if (!state.empty()) {
    p.mark();
  }
  std::set<std::string> names;
  for (const auto& item : state) {
    const auto& name = item.first;
    TORCH_CHECK(!name.empty(), "a tensor has an empty name");
    TORCH_CHECK(
        names.insert(name).second, "tensor '", name, "' is given twice");
    TORCH_CHECK(item.second.defined(), "tensor '", name, "' is undefined");
    at::Tensor t = item.second.is_cpu() ? item.second : item.second.cpu();
    t = t.contiguous();
    const char* type = storage_type_name(t.scalar_type());
    TORCH_CHECK(
        type,
        "tensor '",
        name,
        "' has dtype ",
        t.scalar_type(),
        ", which torch.save files of this kind cannot hold");
    p.string(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark();
    p.string("storage");
    p.global("torch", type);
    p.string(std::to_string(tensors.size()));
    p.string("cpu");
    p.integer(t.numel());
    p.tuple();
    p.binpersid();
    p.integer(0);
    p.mark();
    for (const auto s : t.sizes()) {
      p.integer(s);
    }
    p.tuple();
    p.mark();
    for (const auto s : t.strides()) {
      p.integer(s);
    }
    p.tuple();
    p.boolean(false);
    p.global("collections", "OrderedDict");
    p.empty_tuple();
    p.reduce();
    p.tuple();
    p.reduce();
    tensors.push_back(std::move(t));
  }
  if (!state.empty()) {
    p.setitems();
  }
  const std::string pickle = p.finish();

  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer(
      [&out](const void* data, size_t n) {
        const auto* c = static_cast<const char*>(data);
        out.insert(out.end(), c, c + n);
        return n;
      });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeRecord("byteorder", "little", 6);
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& t = tensors[k];
    writer.writeRecord(
        "data/" + std::to_string(k),
        t.data_ptr(),
        static_cast<size_t>(t.numel()) * t.element_size());
  }
  writer.writeEndOfFile();
  return out;
}

} // namespace resnet::detail
