#!/usr/bin/env python3
"""Measures how fast Python loads a weight file: torch.load (weights_only,
onto the CPU) for torch.save files, safetensors.torch.load_file for
.safetensors (its default mmap backend, whose tensors are read from the file
when first used, or --backend pread, which reads them at once); with --into
ARCH, also torchvision's model.load_state_dict. Prints the median like
resnet_load_speed does.

    python3 load_speed.py --file resnet50.pth [--into resnet50]
                          [--backend mmap|pread] [--repeat 5] [--json]
"""
import argparse
import json
import os
import statistics
import time

import torch


def load(path, backend):
    if path.endswith(".safetensors"):
        import safetensors.torch

        if backend == "mmap":
            return safetensors.torch.load_file(path, device="cpu")
        return safetensors.torch.load_file(path, device="cpu", backend=backend)
    return torch.load(path, map_location="cpu", weights_only=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", required=True)
    p.add_argument("--into", default="")
    p.add_argument("--backend", default="mmap", choices=["mmap", "pread"])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    size = os.path.getsize(a.file)
    model = None
    if a.into:
        import torchvision

        model = getattr(torchvision.models, a.into)()
    times = []
    tensors = 0
    for _ in range(a.repeat):
        start = time.perf_counter()
        state = load(a.file, a.backend)
        if model is not None:
            model.load_state_dict(state)
        times.append((time.perf_counter() - start) * 1e3)
        tensors = len(state)
        del state
    median = statistics.median(times)
    mb_per_s = size / 1e6 / (median / 1e3)
    if a.json:
        impl = "python" if a.backend == "mmap" else "python-" + a.backend
        print(json.dumps({"impl": impl, "file": a.file, "into": a.into, "bytes": size,
                          "tensors": tensors, "repeat": a.repeat,
                          "ms_median": median, "ms_min": min(times),
                          "mb_per_s": mb_per_s}))
    else:
        print(f"{a.file}: {tensors} tensors, {size / 1e6:.1f} MB, median "
              f"{median:.1f} ms ({mb_per_s:.0f} MB/s) over {a.repeat} loads")


if __name__ == "__main__":
    main()
