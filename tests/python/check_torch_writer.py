"""Checks that torch.load(weights_only=True) reads what the C++ writer
(resnet::detail::write_torch_save) wrote: the test TorchFileWriter.
RoundTripsInOrder leaves FILE.pt and FILE.json (names, dtypes, shapes and the
little-endian bytes of each tensor) in the tests' work folder.

Usage: check_torch_writer.py --file WORK/torch_files_writer.pt
"""

import argparse
import collections
import json
import sys

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", required=True)
    path = parser.parse_args().file
    with open(path[: -len(".pt")] + ".json") as f:
        expected = json.load(f)
    state = torch.load(path, map_location="cpu", weights_only=True)
    errors = []
    if type(state) is not collections.OrderedDict:
        errors.append("root is %s, not an OrderedDict" % type(state).__name__)
    names = [t["name"] for t in expected["tensors"]]
    if list(state.keys()) != names:
        errors.append("keys %s, expected %s" % (list(state.keys()), names))
    for t in expected["tensors"]:
        value = state.get(t["name"])
        if not isinstance(value, torch.Tensor):
            errors.append("%s: not a tensor" % t["name"])
            continue
        if str(value.dtype).replace("torch.", "") != t["dtype"]:
            errors.append("%s: dtype %s, expected %s" % (t["name"], value.dtype, t["dtype"]))
        if list(value.shape) != t["shape"]:
            errors.append("%s: shape %s, expected %s" % (t["name"], list(value.shape), t["shape"]))
            continue
        flat = value.contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        if data.hex() != t["hex"]:
            errors.append("%s: values differ" % t["name"])
    for e in errors:
        print("check_torch_writer:", e, file=sys.stderr)
    if not errors:
        print("check_torch_writer: %d tensors read back with weights_only=True" % len(names))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
