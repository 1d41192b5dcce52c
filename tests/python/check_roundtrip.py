#!/usr/bin/env python3
"""Loads a checkpoint written by resnet::save_state_dict into torchvision.

    check_roundtrip.py --arch resnet50 --checkpoint cpp.pt --io cpp_io.pt

cpp_io.pt holds {"input", "output"}: the C++ model's eval-mode output. The
torchvision model loads the checkpoint with strict=True and must give the same
output to a relative error of 1e-5. Exit status 0 when it does.
check_parity_roundtrips.py does this for every architecture the C++ parity
tests wrote.
"""
import argparse
import sys

import torch
import torchvision

TOLERANCE = 1e-5


def relative_error(arch, checkpoint, io_path):
    """||y - output|| / ||output||, y being torchvision's `arch` with the
    checkpoint loaded strictly, in eval mode, on cpp_io's input."""
    # weights_only: what a careful user (and PyTorch >= 2.6 by default) does.
    state = torch.load(checkpoint, weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"expected a dict, torch.load gave {type(state).__name__}")
    model = getattr(torchvision.models, arch)()
    model.load_state_dict(state, strict=True)
    model.eval()
    io = torch.load(io_path, weights_only=True)
    with torch.no_grad():
        y = model(io["input"])
    return ((y - io["output"]).norm() / io["output"].norm()).item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--io", required=True)
    args = p.parse_args()
    err = relative_error(args.arch, args.checkpoint, args.io)
    print(f"{args.arch}: torchvision on the C++ checkpoint, relative error {err:.3g}")
    sys.exit(0 if err <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
