#!/usr/bin/env python3
"""Loads a checkpoint written by resnet::save_state_dict into torchvision.

    check_roundtrip.py --arch resnet50 --checkpoint cpp.pt --io cpp_io.pt

cpp_io.pt holds {"input", "output"}: the C++ model's eval-mode output. The
torchvision model loads the checkpoint with strict=True and must give the same
output to a relative error of 1e-5. Exit status 0 when it does.
"""
import argparse
import sys

import torch
import torchvision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--io", required=True)
    args = p.parse_args()
    # weights_only: what a careful user (and PyTorch >= 2.6 by default) does.
    state = torch.load(args.checkpoint, weights_only=True)
    if not isinstance(state, dict):
        sys.exit(f"expected a dict, torch.load gave {type(state).__name__}")
    model = getattr(torchvision.models, args.arch)()
    model.load_state_dict(state, strict=True)
    model.eval()
    io = torch.load(args.io)
    with torch.no_grad():
        y = model(io["input"])
    err = ((y - io["output"]).norm() / io["output"].norm()).item()
    print(f"{args.arch}: torchvision on the C++ checkpoint, relative error {err:.3g}")
    sys.exit(0 if err <= 1e-5 else 1)


if __name__ == "__main__":
    main()
