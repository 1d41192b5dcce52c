"""Checks that Python's safetensors reads the files the C++ writer makes.

    python check_safetensors_writer.py --tests resnet_tests --work DIR \
        --fixtures FIXTURE_DIR

Runs the gtest SafetensorsWriter.ForPython with RESNET_SAFETENSORS_EXPORT_DIR
set, so that it writes pattern.safetensors (tensors whose bytes follow a
formula rebuilt here, for every dtype this torch has) and model.safetensors
(the fixture's torchvision resnet18 read and written again by the C++ code).
Then loads both with safetensors.torch.load_file and compares them with what
they must hold, bit for bit, and compares our bytes with what
safetensors.torch.save writes for the same tensors.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

# Every safetensors dtype code -> (torch attribute, position in the format's
# dtype enum), as the C++ pattern uses it.
DTYPES = {
    "BOOL": ("bool", 0),
    "F4": ("float4_e2m1fn_x2", 1),
    "U8": ("uint8", 4),
    "I8": ("int8", 5),
    "F8_E5M2": ("float8_e5m2", 6),
    "F8_E4M3": ("float8_e4m3fn", 7),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 9),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 10),
    "I16": ("int16", 11),
    "U16": ("uint16", 12),
    "F16": ("float16", 13),
    "BF16": ("bfloat16", 14),
    "I32": ("int32", 15),
    "U32": ("uint32", 16),
    "F32": ("float32", 17),
    "C64": ("complex64", 18),
    "F64": ("float64", 19),
    "I64": ("int64", 20),
    "U64": ("uint64", 21),
}

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
        print("FAIL:", message)


def same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_bytes = lambda t: t.contiguous().reshape(-1).view(torch.uint8)
    return torch.equal(as_bytes(a), as_bytes(b))


def expected_pattern():
    out = {}
    for code, (attr, order) in DTYPES.items():
        if not hasattr(torch, attr):
            continue
        if code in ("U16", "U32", "U64") and not hasattr(torch, "uint64"):
            continue
        dtype = getattr(torch, attr)
        shape = (3, 2) if code == "F4" else (3, 4)
        size = torch.empty((), dtype=dtype).element_size()
        n = shape[0] * shape[1] * size
        raw = (torch.arange(n, dtype=torch.int64) * 37 + 11 * order + 5) % 256
        if code == "BOOL":
            raw = raw % 2
        out["p_" + code] = raw.to(torch.uint8).view(dtype).reshape(shape)
    out["transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    out["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    out["empty"] = torch.zeros(0, 3, dtype=torch.int32)
    return out


def split(path_or_bytes):
    data = path_or_bytes
    if isinstance(data, str):
        with open(data, "rb") as f:
            data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8:8 + n].decode("utf-8")), data[8 + n:]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tests", required=True, help="the resnet_tests binary")
    p.add_argument("--work", required=True)
    p.add_argument("--fixtures", required=True,
                   help="make_safetensors_files.py's output folder")
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    env = dict(os.environ, RESNET_SAFETENSORS_EXPORT_DIR=a.work)
    run = subprocess.run(
        [a.tests, "--gtest_filter=SafetensorsWriter.ForPython"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(run.stdout)
    if run.returncode != 0 or "[  SKIPPED ]" in run.stdout or \
            "[  PASSED  ] 1 test" not in run.stdout:
        print("FAIL: SafetensorsWriter.ForPython did not run and pass")
        return 1

    # Every tensor, bit for bit, and the metadata.
    path = os.path.join(a.work, "pattern.safetensors")
    got = load_file(path)
    want = expected_pattern()
    check(sorted(got) == sorted(want),
          "pattern.safetensors holds %s, expected %s" % (sorted(got), sorted(want)))
    for name, tensor in want.items():
        if name in got:
            check(same_bits(got[name], tensor.contiguous()),
                  "%s: got %s %s" % (name, got[name].dtype, tuple(got[name].shape)))
    with safe_open(path, framework="pt") as f:
        check(f.metadata() == {"producer": "resnet", "note": "r\u00e9seau"},
              "metadata: got %r" % (f.metadata(),))

    # Our bytes and Python's for the same tensors: the same header (as JSON;
    # Python orders several metadata keys by hash) and the same data.
    n, header, data = split(path)
    py_n, py_header, py_data = split(save(
        {k: v.contiguous() for k, v in want.items()},
        metadata={"producer": "resnet", "note": "r\u00e9seau"}))
    check(n % 8 == 0, "header length %d is not a multiple of 8" % n)
    check(n == py_n and header == py_header,
          "pattern header differs from Python's:\n%s\n%s" % (header, py_header))
    check(data == py_data, "pattern data differs from Python's")

    # The torchvision model read and written again: equal tensors, and the
    # very bytes Python wrote.
    ours = os.path.join(a.work, "model.safetensors")
    original = os.path.join(a.fixtures, "model.safetensors")
    got, want = load_file(ours), load_file(original)
    check(list(got) == list(want), "model keys differ")
    for name in want:
        check(name in got and same_bits(got[name], want[name]), "model " + name)
    with open(ours, "rb") as f1, open(original, "rb") as f2:
        check(f1.read() == f2.read(), "model.safetensors bytes differ from Python's")

    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("Python's safetensors (torch %s) reads the C++ files: %d tensors checked"
          % (torch.__version__, len(want) + len(expected_pattern())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
