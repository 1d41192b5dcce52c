#!/usr/bin/env python3
"""Export a torchvision ResNet as a checkpoint that the C++ library loads.

    python3 export_torchvision.py --arch resnet50 --out resnet50.pt
    python3 export_torchvision.py --arch resnet50 --weights DEFAULT --out resnet50.pt
    python3 export_torchvision.py --arch resnet18 --format script --out r18.ts \
        --reference r18_reference.pt

In C++:  resnet::load_state_dict(*model, "resnet50.pt");

--weights DEFAULT (or a name such as IMAGENET1K_V2) uses torchvision's
pretrained weights if they are in the local torch hub cache (or can be
downloaded); without it the weights are random, from --seed.
--reference writes a dict {"input", "output"}: a random batch and the model's
eval-mode output on it, to check the C++ side against.
Works with torchvision 0.13 and later (Debian 12's python3-torchvision is 0.14).
"""
import argparse
import sys

import torch
import torchvision

ARCHS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
]


def build(arch, weights=None, num_classes=1000, seed=0):
    """A torchvision model, pretrained if `weights` names weights."""
    torch.manual_seed(seed)
    kwargs = {} if weights else {"num_classes": num_classes}
    return getattr(torchvision.models, arch)(weights=weights, **kwargs)


def randomize_batch_norm(model, seed=0):
    """Gives every batch norm non-trivial statistics and affine parameters, so
    that a comparison exercises them (fresh models have mean 0, var 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def save(model, path, fmt, example=None):
    """Writes `model` in one of the formats resnet::load_state_dict reads."""
    model.eval()
    if fmt == "dict":
        # As torchvision publishes its weights.
        torch.save(model.state_dict(), path)
    elif fmt == "script":
        torch.jit.script(model).save(path)
    elif fmt == "trace":
        torch.jit.trace(model, example).save(path)
    else:
        raise ValueError(f"unknown format {fmt}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", required=True, choices=ARCHS)
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--format", default="dict", choices=["dict", "script", "trace"])
    p.add_argument("--weights", default=None,
                   help="torchvision weights name, e.g. DEFAULT (needs them cached)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--randomize-bn", action="store_true",
                   help="random batch-norm statistics (for testing)")
    p.add_argument("--reference", help="also write {'input', 'output'} here")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)

    try:
        model = build(args.arch, args.weights, args.num_classes, args.seed)
    except Exception as e:  # no cached weights and no network, typically
        sys.exit(f"export_torchvision: cannot get weights {args.weights!r} "
                 f"for {args.arch}: {e}")
    if args.randomize_bn:
        randomize_batch_norm(model, args.seed)
    model.eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)
    save(model, args.out, args.format, example=x)
    print(f"wrote {args.out} ({args.format}, {args.arch}, "
          f"{sum(t.numel() for t in model.parameters())} parameters)")
    if args.reference:
        with torch.no_grad():
            y = model(x)
        torch.save({"input": x, "output": y}, args.reference)
        print(f"wrote {args.reference} (input {list(x.shape)}, output {list(y.shape)})")


if __name__ == "__main__":
    main()
