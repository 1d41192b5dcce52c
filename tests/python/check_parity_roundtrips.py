#!/usr/bin/env python3
"""Checks in torchvision the checkpoints that the C++ parity tests wrote: the
CTest cleanup of the fixture make_parity_references, run after the tests.

    check_parity_roundtrips.py --dir DIR

Parity.OutputsGradientsAndRoundTripMatchTorchvision/<arch> (test_weights.cpp)
leaves DIR/torchvision_<arch>/cpp.pt, resnet::save_state_dict of the model it
loaded, and cpp_io.pt, {"input", "output"} with its eval-mode output.
torchvision loads cpp.pt with torch.load(weights_only=True) and
load_state_dict(strict=True) and must give that output to a relative error of
1e-5. Every architecture must be there: a missing cpp.pt (its test did not
run, or stopped before writing it) fails the check. One line per architecture;
exit status 0 when all pass. Then the case folders (some 9 GB) are removed,
unless --keep; after a failure they stay for a look.
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_roundtrip import TOLERANCE, relative_error  # noqa: E402
from make_parity_references import (  # noqa: E402
    KUANGLIU, TORCHVISION, kuangliu_dir, torchvision_dir)


def check(root, arch):
    """(passed, what to print) for one architecture."""
    folder = torchvision_dir(root, arch)
    checkpoint = os.path.join(folder, "cpp.pt")
    io_path = os.path.join(folder, "cpp_io.pt")
    for path in (checkpoint, io_path):
        if not os.path.isfile(path):
            return False, (f"no {path}: the test Torchvision/Parity."
                           f"OutputsGradientsAndRoundTripMatchTorchvision/{arch} "
                           "did not run, or stopped before writing it")
    try:
        err = relative_error(arch, checkpoint, io_path)
    except Exception as e:  # noqa: BLE001 - reported, then the next one
        return False, f"{type(e).__name__}: {e}"
    verdict = "ok" if err <= TOLERANCE else f"over {TOLERANCE:g}"
    return err <= TOLERANCE, f"relative error {err:.3g}, {verdict}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True,
                   help="the folder make_parity_references.py wrote")
    p.add_argument("--keep", action="store_true",
                   help="keep the files when every check passes")
    args = p.parse_args()
    failed = []
    for arch in TORCHVISION:
        passed, what = check(args.dir, arch)
        print(f"{arch}: torchvision on the C++ checkpoint: "
              f"{what if passed else 'FAILED: ' + what}", flush=True)
        if not passed:
            failed.append(arch)
    if failed:
        sys.exit(f"{len(failed)} of {len(TORCHVISION)} failed: {' '.join(failed)}")
    print(f"all {len(TORCHVISION)} pass")
    if not args.keep:
        for folder in ([torchvision_dir(args.dir, a) for a in TORCHVISION] +
                       [kuangliu_dir(args.dir, a) for a in KUANGLIU]):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
