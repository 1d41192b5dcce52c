#!/usr/bin/env python3
"""Writes timm's ResNet variants for the C++ tests (tests/test_timm.cpp).

    make_timm_models.py --out DIR

For each variant in VARIANTS, built with timm.create_model(name,
pretrained=False), random weights and random batch-norm statistics:
    DIR/<variant>.dict.pt      torch.save(dict(model.state_dict()))
    DIR/<variant>.pth          torch.save(model.state_dict())  (OrderedDict)
    DIR/<variant>.safetensors  safetensors.torch.save_file(model.state_dict())
    DIR/<variant>.ref.pt       {'input', 'eval', 'train'}: a [2, 3, 64, 64]
                               input and the outputs in eval and train mode
and for every architecture in ARCHITECTURES (1000 classes, no files):
    DIR/models.json            {'timm': version, 'torch': version,
                                'variants': {variant: {'model', 'kwargs'}},
                                'models': {name: {'parameters': n,
                                                  'entries': ['key shape', ...]}}}
Entries list the state_dict in order as "name WxHx..." ("scalar" for 0-d).
"""
import argparse
import json
import os
import sys

import safetensors.torch
import timm
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
# Non-trivial batch-norm statistics and affine parameters (timm
# zero-initializes the last norm of each block).
from export_torchvision import randomize_batch_norm  # noqa: E402

# Variants whose outputs the tests compare: timm name and extra arguments.
VARIANTS = {
    "resnet18": ("resnet18", {}),
    "resnet18d": ("resnet18d", {}),
    "resnet26": ("resnet26", {}),
    "resnet26d": ("resnet26d", {}),
    "resnet26t": ("resnet26t", {}),
    "seresnext26d_32x4d": ("seresnext26d_32x4d", {}),
    "ecaresnet26t": ("ecaresnet26t", {}),
    # Dilated last stage: the averaging shortcut pools with stride 1 and
    # 'same' padding.
    "resnet26d_os16": ("resnet26d", {"output_stride": 16}),
}

# Every timm architecture of the C++ table, plus torchvision names that timm
# shares, for parameter counts and state_dict names.
ARCHITECTURES = [
    "resnet18", "resnet50", "resnext50_32x4d",
    "resnet18d", "resnet26", "resnet26d", "resnet26t", "resnet34d",
    "resnet50c", "resnet50s", "resnet50d", "resnet50t", "resnet101d",
    "resnet152d", "seresnet50", "seresnext26d_32x4d", "seresnext50_32x4d",
    "seresnext101_32x4d", "ecaresnet26t", "ecaresnet50d", "ecaresnet50t",
    "ecaresnet101d",
]


def entries(model):
    out = []
    for k, v in model.state_dict().items():
        shape = "x".join(str(s) for s in v.shape) or "scalar"
        out.append(f"{k} {shape}")
    return out


def write_variant(out, variant, name, kwargs, seed):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs)
    randomize_batch_norm(model, seed)
    state = model.state_dict()
    torch.save(dict(state), os.path.join(out, variant + ".dict.pt"))
    torch.save(state, os.path.join(out, variant + ".pth"))
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in state.items()},
        os.path.join(out, variant + ".safetensors"))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        model.eval()
        eval_out = model(x).clone()
        model.train()
        train_out = model(x).clone()
    torch.save({"input": x, "eval": eval_out, "train": train_out},
               os.path.join(out, variant + ".ref.pt"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    for i, (variant, (name, kwargs)) in enumerate(VARIANTS.items()):
        write_variant(args.out, variant, name, kwargs, seed=100 + i)

    models = {}
    for name in ARCHITECTURES:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
        models[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "entries": entries(model),
        }
    summary = {
        "timm": timm.__version__,
        "torch": torch.__version__,
        "variants": {v: {"model": n, "kwargs": k} for v, (n, k) in VARIANTS.items()},
        "models": models,
    }
    tmp = os.path.join(args.out, "models.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, os.path.join(args.out, "models.json"))
    print(f"timm {timm.__version__} (torch {torch.__version__}): "
          f"{len(VARIANTS)} variants, {len(models)} architectures in {args.out}")


if __name__ == "__main__":
    main()
