#!/usr/bin/env python3
"""Writes torchvision_keys.txt: every state_dict entry of torchvision's ResNets.

Run with Debian's python3-torchvision (0.14):
    /usr/bin/python3 tests/data/make_torchvision_keys.py > tests/data/torchvision_keys.txt
One line per entry, in state_dict order: arch, name, kind (param|buffer), shape.
"""
import torch
import torchvision

ARCHS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
]

print(f"# torchvision {torchvision.__version__}, torch {torch.__version__}")
for arch in ARCHS:
    model = getattr(torchvision.models, arch)()
    params = {name for name, _ in model.named_parameters()}
    for name, tensor in model.state_dict().items():
        kind = "param" if name in params else "buffer"
        shape = "x".join(str(s) for s in tensor.shape) or "scalar"
        print(arch, name, kind, shape)
