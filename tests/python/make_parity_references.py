#!/usr/bin/env python3
"""Writes the references of the C++ parity tests (tests/test_weights.cpp)
before they run: the CTest fixture make_parity_references.

    make_parity_references.py --out DIR
        DIR/torchvision_<arch>/  state.pt, script.pt, io.pt for each
                                 torchvision ResNet (script.pt traced for
                                 resnet18, scripted for the others)
        DIR/kuangliu_<arch>/     state.pt, io.pt for each CIFAR ResNet in the
                                 style of kuangliu/pytorch-cifar
make_reference.py describes the files. Each case folder is emptied first, so
that nothing of an earlier run (the C++ tests' cpp.pt) is left in it.
check_parity_roundtrips.py checks what the C++ tests leave there.
"""
import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_reference  # noqa: E402
from make_reference import export  # noqa: E402

TORCHVISION = list(export.ARCHS)
KUANGLIU = list(make_reference.KUANGLIU)
TRACED = {"resnet18"}  # one traced archive; the others are scripted


def torchvision_dir(root, arch):
    return os.path.join(root, "torchvision_" + arch)


def kuangliu_dir(root, arch):
    return os.path.join(root, "kuangliu_" + arch)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cases = [(torchvision_dir(args.out, a),
              lambda d, a=a: make_reference.write_torchvision(a, d, trace=a in TRACED))
             for a in TORCHVISION]
    cases += [(kuangliu_dir(args.out, a),
               lambda d, a=a: make_reference.write_kuangliu(a, d))
              for a in KUANGLIU]
    for folder, write in cases:
        start = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        write(folder)
        print(f"{folder}: {time.monotonic() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
