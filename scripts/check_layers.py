#!/usr/bin/env python3
"""Checks that the headers under include/resnet include only downwards.

The library is in layers, one folder each; a header may include its own
folder, the folders below it and LibTorch, never a folder above its own:

  root (config.h, version.h, device.h, error.h, cpu_features.h, ...)
  model/        root
  io/           root
  inference/    root, model, io (int8 networks' files)
  data/         root, io
  hub/          root, model, io (published weights, caches, downloads)
  train/        root, model, io, inference, data, hub

Within a layer, a subfolder (io/detail/, train/distributed/) sits below its
parent: it never includes the parent's headers or the parent's umbrella.
A `detail/` folder is internal: only its own layer includes it. Umbrellas
beside the folders (model.h for model/, ...) belong to their folder's layer;
resnet.h gathers model, io and inference.

Prints the include graph between layers and exits 1 on any violation.
"""
import pathlib
import re
import sys

ALLOWED = {
    "root": {"root"},
    "model": {"root", "model"},
    "io": {"root", "io"},
    "inference": {"root", "model", "io", "inference"},
    "data": {"root", "io", "data"},
    "hub": {"root", "model", "io", "hub"},
    "train": {"root", "model", "io", "inference", "data", "hub", "train"},
    "resnet.h": {"root", "model", "io", "inference"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]resnet/([^>"]+)[>"]', re.M)


def place(rel, folders):
    """(layer, folder parts) of a header path relative to include/resnet."""
    parts = rel.split("/")
    if len(parts) == 1:
        if rel == "resnet.h":
            return "resnet.h", ()
        stem = rel[:-2]
        if stem in folders:  # an umbrella beside its folder
            return stem, (stem,)
        return "root", ()
    return parts[0], tuple(parts[:-1])


def umbrella_folder(rel, folders):
    """The folder an umbrella gathers (train/distributed.h -> train/distributed)."""
    stem = rel[:-2]
    return tuple(stem.split("/")) if stem in folders else None


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    base = root / "include" / "resnet"
    headers = sorted(p.relative_to(base).as_posix() for p in base.rglob("*.h"))
    folders = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_dir()}
    problems = []
    edges = {}
    count = 0
    for rel in headers:
        layer, folder = place(rel, folders)
        umbrella = umbrella_folder(rel, folders)
        if umbrella:  # an umbrella sits in the folder it gathers
            folder = umbrella
        text = (base / rel).read_text()
        for target in INCLUDE.findall(text):
            count += 1
            if not (base / target).is_file():
                problems.append(f"{rel}: includes <resnet/{target}>, which does not exist")
                continue
            t_layer, t_folder = place(target, folders)
            t_umbrella = umbrella_folder(target, folders)
            if t_umbrella:
                t_folder = t_umbrella
            edges.setdefault((layer, t_layer), 0)
            edges[(layer, t_layer)] += 1
            if t_layer not in ALLOWED[layer]:
                problems.append(
                    f"{rel}: includes <resnet/{target}> of layer '{t_layer}', "
                    f"above or beside '{layer}'")
                continue
            if t_layer == layer and layer != "root":
                # Within a layer: never a folder above one's own.
                if len(t_folder) < len(folder) and folder[: len(t_folder)] == t_folder:
                    problems.append(
                        f"{rel}: includes <resnet/{target}> from "
                        f"{'/'.join(t_folder)}/, a folder above its own")
                    continue
            if "detail" in t_folder:
                owner = t_folder[: t_folder.index("detail")]
                if folder[: len(owner)] != owner:
                    problems.append(
                        f"{rel}: includes <resnet/{target}>, internal to "
                        f"{'/'.join(owner) or 'the root'}/")
    print(f"{len(headers)} headers, {count} includes of the library")
    for (a, b), n in sorted(edges.items()):
        print(f"  {a:>10} -> {b:<10} {n:4d}")
    for p in problems:
        print("error:", p)
    print("layering: " + ("ok" if not problems else f"{len(problems)} violation(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
