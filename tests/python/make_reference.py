#!/usr/bin/env python3
"""Writes what the C++ parity tests compare against, for one architecture
(make_parity_references.py writes them all for the tests).

    make_reference.py --arch resnet50 --out DIR
        DIR/state.pt   torch.save(dict(model.state_dict()))
        DIR/script.pt  torch.jit.script(model) (or traced, with --trace)
        DIR/io.pt      input, eval_output, train_output, loss_weight and
                       grad.<name> for every parameter: the gradients of
                       (train_output * loss_weight).sum() in train mode
    make_reference.py --kuangliu resnet18 --out DIR
        the same state.pt and io.pt (no gradients) for a CIFAR ResNet in the
        style of kuangliu/pytorch-cifar, saved through DataParallel.
Weights are random with randomized batch-norm statistics.
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import export_torchvision as export  # noqa: E402


def projection(cin, cout, stride):
    """The 1x1 convolution and batch norm where a block changes shape, or
    an empty Sequential (the identity)."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class CifarBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = projection(cin, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = projection(cin, out, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem without pooling, four stages, avg_pool2d(out, 4), `linear`."""

    def __init__(self, block, layers, num_classes=10):
        super().__init__()
        self.cin = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes, n, stride):
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(block(self.cin, planes, s))
            self.cin = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


KUANGLIU = {
    "resnet18": (CifarBasic, [2, 2, 2, 2]),
    "resnet34": (CifarBasic, [3, 4, 6, 3]),
    "resnet50": (CifarBottleneck, [3, 4, 6, 3]),
    "resnet101": (CifarBottleneck, [3, 4, 23, 3]),
    "resnet152": (CifarBottleneck, [3, 8, 36, 3]),
}


def write_kuangliu(arch, out, seed=0):
    """state.pt (saved through DataParallel) and io.pt for a CIFAR ResNet in
    the style of kuangliu/pytorch-cifar."""
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed)
    block, layers = KUANGLIU[arch]
    model = CifarResNet(block, layers)
    export.randomize_batch_norm(model, seed)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = model(x)
    # DataParallel adds the "module." prefix to every key (and moves the model
    # to a GPU where there is one: back to the CPU).
    torch.save(dict(nn.DataParallel(model).cpu().state_dict()),
               os.path.join(out, "state.pt"))
    torch.save({"input": x, "eval_output": y}, os.path.join(out, "io.pt"))


def write_torchvision(arch, out, trace=False, seed=0):
    """state.pt, script.pt (traced if `trace`) and io.pt for a torchvision
    model."""
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(seed + 1)
    model = export.build(arch, seed=seed)
    export.randomize_batch_norm(model, seed)
    x = torch.randn(2, 3, 64, 64, generator=g)
    export.save(model, os.path.join(out, "state.pt"), "dict")
    export.save(model, os.path.join(out, "script.pt"),
                "trace" if trace else "script", example=x)
    model.eval()
    with torch.no_grad():
        eval_output = model(x)
    model.train()
    train_output = model(x)
    weight = torch.randn(train_output.shape, generator=g)
    (train_output * weight).sum().backward()
    io = {"input": x, "eval_output": eval_output,
          "train_output": train_output.detach(), "loss_weight": weight}
    for name, param in model.named_parameters():
        io["grad." + name] = param.grad
    torch.save(io, os.path.join(out, "io.pt"))


def main():
    p = argparse.ArgumentParser()
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--arch", choices=export.ARCHS)
    group.add_argument("--kuangliu", choices=sorted(KUANGLIU))
    p.add_argument("--out", required=True)
    p.add_argument("--trace", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.kuangliu:
        write_kuangliu(args.kuangliu, args.out, args.seed)
    else:
        write_torchvision(args.arch, args.out, args.trace, args.seed)


if __name__ == "__main__":
    main()
