#!/usr/bin/env python3
"""Prints, as JSON, what torchvision and timm publish for some architectures.

    dump_pretrained_tables.py [ARCH ...]

For each architecture name (by default the ImageNet architectures the library
builds), what the installed torchvision and timm say of their pretrained
weights, for tests/test_hub_registry.cpp to compare with
include/resnet/hub/registry.h:

    {"versions": {"python", "torch", "torchvision", "timm"},
     "torchvision": {
        "weights": [{"name": "resnet50.IMAGENET1K_V2", "arch", "version",
                     "url", "file", "sha256_prefix", "acc1", "acc5",
                     "num_params", "num_classes", "same_categories",
                     "resize", "crop", "interpolation", "mean", "std"}, ...],
        "defaults": {"resnet50": "IMAGENET1K_V2", ...},
        "categories": [1000 names of ResNet50_Weights.IMAGENET1K_V1]},
     "timm": {
        "pretrained": [{"name": "resnet50.a1_in1k", "arch", "tag",
                        "hf_hub_id", "num_classes", "mean", "std",
                        "crop_pct", "interpolation"}, ...]}}

Every torchvision weight and every timm pretrained tag of the architectures
is listed, whatever its classes or hosting; the test does the choosing.

Works with torchvision 0.14 (Debian 12) up to today's releases and with timm
0.9 and later. Where they differ:
  - accuracies: torchvision 0.14 and later keep them in
    meta["_metrics"]["ImageNet-1K"]["acc@1"]; 0.13 had meta["acc@1"];
  - `torchvision.models.get_model_weights` appeared in 0.14; before it the
    `<Arch>_Weights` enums are found in torchvision.models.resnet;
  - transforms' sizes are lists ([232]) or ints, and interpolation an
    `InterpolationMode` (its `.value` is "bilinear") or a PIL constant;
  - timm's pretrained configurations are `PretrainedCfg` objects (0.9 and
    later) or dicts.
Exits with status 1 if torchvision or timm cannot be imported, or if one of
them fails for an architecture it publishes weights of.
"""
import json
import platform
import re
import sys

DEFAULT_ARCHS = (
    "resnet18 resnet34 resnet50 resnet101 resnet152 resnext50_32x4d "
    "resnext101_32x8d resnext101_64x4d wide_resnet50_2 wide_resnet101_2 "
    "resnet18d resnet26 resnet26d resnet26t resnet34d resnet50c resnet50s "
    "resnet50d resnet50t resnet101d resnet152d seresnet50 seresnext26d_32x4d "
    "seresnext50_32x4d seresnext101_32x4d ecaresnet26t ecaresnet50d "
    "ecaresnet50t ecaresnet101d"
).split()

# torch.hub's check of a downloaded file: the hex digits between the last '-'
# and the following '.' of the file name. torch.hub.HASH_REGEX where present.
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


def single(value):
    """232 of [232], (232,) or 232."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"expected one size, got {value!r}")
        return int(value[0])
    return int(value)


def interpolation_name(mode):
    """"bilinear" of InterpolationMode.BILINEAR, of "bilinear" or of PIL's 2."""
    value = getattr(mode, "value", mode)
    if isinstance(value, str):
        return value.lower()
    pil = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos"}
    return pil.get(int(value), str(value))


def weights_enum(torchvision, arch):
    """torchvision's <Arch>_Weights enum of `arch`, or None where none."""
    get = getattr(torchvision.models, "get_model_weights", None)
    if get is not None:
        try:
            return get(arch)
        except (KeyError, ValueError):
            return None
    import torchvision.models.resnet as resnet_module

    builder = getattr(resnet_module, arch, None)
    annotation = getattr(builder, "__annotations__", {}).get("weights")
    for enum in vars(resnet_module).values():
        if isinstance(enum, type) and enum.__name__.endswith("_Weights"):
            if annotation is not None and enum.__name__ in str(annotation):
                return enum
    return None


def accuracies(meta):
    """(acc@1, acc@5) on ImageNet-1k from a weight's meta."""
    metrics = meta.get("_metrics", meta.get("metrics"))
    if isinstance(metrics, dict):
        metrics = metrics.get("ImageNet-1K", metrics)
    else:
        metrics = meta
    return float(metrics["acc@1"]), float(metrics["acc@5"])


def torchvision_table(archs):
    import torch.hub
    import torchvision
    import torchvision.models

    hash_regex = getattr(torch.hub, "HASH_REGEX", HASH_REGEX)
    reference = None
    weights, defaults = [], {}
    for arch in archs:
        enum = weights_enum(torchvision, arch)
        if enum is None:
            continue
        members = [w for w in enum if w.name != "DEFAULT"]
        default = getattr(enum, "DEFAULT", None)
        if default is not None:
            defaults[arch] = default.name
        for w in members:
            meta = w.meta
            categories = list(meta.get("categories") or [])
            if reference is None and arch == "resnet50" and w.name == "IMAGENET1K_V1":
                reference = categories
            transform = w.transforms()
            acc1, acc5 = accuracies(meta)
            file = w.url.rsplit("/", 1)[-1]
            match = hash_regex.search(file)
            weights.append(
                {
                    "name": f"{arch}.{w.name}",
                    "arch": arch,
                    "version": w.name,
                    "url": w.url,
                    "file": file,
                    "sha256_prefix": match.group(1) if match else "",
                    "acc1": acc1,
                    "acc5": acc5,
                    "num_params": int(meta["num_params"]),
                    "num_classes": len(categories),
                    "categories": categories,
                    "resize": single(transform.resize_size),
                    "crop": single(transform.crop_size),
                    "interpolation": interpolation_name(transform.interpolation),
                    "mean": [float(x) for x in transform.mean],
                    "std": [float(x) for x in transform.std],
                }
            )
    if reference is None:
        from torchvision.models import ResNet50_Weights

        reference = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    for w in weights:
        w["same_categories"] = w.pop("categories") == reference
    return {"weights": weights, "defaults": defaults, "categories": reference}


def cfg_value(cfg, key):
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def timm_table(archs):
    import timm
    from timm.models import get_pretrained_cfg

    wanted = set(archs)
    out = []
    for name in sorted(timm.list_pretrained()):
        arch, _, tag = name.partition(".")
        if arch not in wanted:
            continue
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            raise RuntimeError(f"timm lists {name} but has no configuration for it")
        out.append(
            {
                "name": name,
                "arch": arch,
                "tag": tag,
                "hf_hub_id": cfg_value(cfg, "hf_hub_id"),
                "num_classes": cfg_value(cfg, "num_classes"),
                "mean": list(cfg_value(cfg, "mean") or []),
                "std": list(cfg_value(cfg, "std") or []),
                "crop_pct": cfg_value(cfg, "crop_pct"),
                "interpolation": cfg_value(cfg, "interpolation"),
            }
        )
    return {"pretrained": out}


def main(argv):
    archs = argv[1:] or DEFAULT_ARCHS
    for arch in archs:
        if not re.fullmatch(r"[a-z0-9_]+", arch):
            sys.exit(f"dump_pretrained_tables.py: not an architecture name: {arch!r}")
    try:
        import timm
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f"dump_pretrained_tables.py: needs torch, torchvision and timm: {e}")
    table = {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "timm": timm.__version__,
        },
        "torchvision": torchvision_table(archs),
        "timm": timm_table(archs),
    }
    json.dump(table, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
