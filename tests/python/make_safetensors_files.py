"""Writes safetensors files with safetensors.torch.save_file for the C++ tests.

    python make_safetensors_files.py --out DIR

DIR gets, next to each file NAME.safetensors, NAME.raw: the tensors' bytes
(little-endian, C order) one after another, and manifest.json describing them
(name, dtype as the header names it, LibTorch shape, offset and length in
NAME.raw, metadata), so the C++ tests check the reader bit for bit without
trusting it. Every dtype this torch has is covered; newer ones only where
torch has them.
"""

import argparse
import json
import os
import struct

import safetensors
import torch
import torchvision
from safetensors.torch import save_file

# safetensors dtype code -> torch attribute, in the format's own order.
DTYPES = [
    ("BOOL", "bool"),
    ("F4", "float4_e2m1fn_x2"),
    ("U8", "uint8"),
    ("I8", "int8"),
    ("F8_E5M2", "float8_e5m2"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E8M0", "float8_e8m0fnu"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
    ("I16", "int16"),
    ("U16", "uint16"),
    ("F16", "float16"),
    ("BF16", "bfloat16"),
    ("I32", "int32"),
    ("U32", "uint32"),
    ("F32", "float32"),
    ("C64", "complex64"),
    ("F64", "float64"),
    ("I64", "int64"),
    ("U64", "uint64"),
]


def available_dtypes():
    # safetensors maps the unsigned types only from torch 2.3 (its own check).
    out = []
    for code, attr in DTYPES:
        if not hasattr(torch, attr):
            continue
        if code in ("U16", "U32", "U64") and not hasattr(torch, "uint64"):
            continue
        out.append((code, getattr(torch, attr)))
    return out


def item_size(dtype):
    return torch.empty((), dtype=dtype).element_size()


def random_tensor(dtype, shape, gen):
    """Any bit pattern (NaNs included) for numbers, 0/1 for bool."""
    numel = 1
    for s in shape:
        numel *= s
    if dtype == torch.bool:
        return torch.randint(0, 2, (numel,), generator=gen).bool().reshape(shape)
    raw = torch.randint(
        0, 256, (numel * item_size(dtype),), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)


def raw_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def header_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n).decode("utf-8"))


def write(out, name, tensors, metadata, manifest):
    path = os.path.join(out, name + ".safetensors")
    save_file(tensors, path, metadata=metadata)
    n, header = header_of(path)
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda kv: tuple(kv[1]["data_offsets"]))
    raw = bytearray()
    listed = []
    for key, info in entries:
        data = raw_bytes(tensors[key])
        listed.append({
            "name": key,
            "dtype": info["dtype"],
            "shape": list(tensors[key].shape),
            "offset": len(raw),
            "nbytes": len(data),
        })
        raw += data
    with open(os.path.join(out, name + ".raw"), "wb") as f:
        f.write(raw)
    manifest["files"][name + ".safetensors"] = {
        "raw": name + ".raw",
        "header_length": n,
        "metadata": header.get("__metadata__") or {},
        "tensors": listed,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    out = p.parse_args().out
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(20261128)
    dtypes = available_dtypes()
    manifest = {
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "dtypes": [code for code, _ in dtypes],
        "files": {},
    }

    # One tensor per dtype, of assorted shapes; one metadata key, so that the
    # header's bytes do not depend on the writer's hash-map order.
    shapes = [(2, 3), (5,), (4, 1, 2), (3, 4), (1,), (2, 2, 2)]
    tensors = {}
    for i, (code, dtype) in enumerate(dtypes):
        shape = shapes[i % len(shapes)]
        if code == "F4":
            shape = (3, 2)  # LibTorch shape: two elements per byte
        tensors["t_" + code.lower()] = random_tensor(dtype, shape, gen)
    write(out, "all_dtypes", tensors, {"format": "pt"}, manifest)

    # Scalars, empty tensors, names JSON must escape, several metadata keys.
    special = {
        "scalar_f32": torch.tensor(1.5),
        "scalar_i64": torch.tensor(-7),
        "scalar_bool": torch.tensor(True),
        "empty_f32": torch.zeros(0),
        "empty_3d_f16": torch.zeros(2, 0, 3, dtype=torch.float16),
        "empty_i8": torch.zeros(0, dtype=torch.int8),
        "t\u00eate/\u6d4b\u8bd5": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        'quote"back\\slash\ttab': torch.arange(4, dtype=torch.int32),
        "a.b c": random_tensor(torch.float64, (3,), gen),
    }
    metadata = {
        "format": "pt",
        "author": "r\u00e9seau \u2014 \u6d4b\u8bd5",
        "empty": "",
        "json": '{"nested": [1, 2]}',
    }
    write(out, "special", special, metadata, manifest)

    # No tensors at all.
    write(out, "empty", {}, None, manifest)

    # A real network: torchvision's resnet18 with a fixed initialization.
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write(out, "model", state, None, manifest)

    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    print("wrote", len(manifest["files"]), "safetensors files for dtypes",
          " ".join(manifest["dtypes"]), "to", out)


if __name__ == "__main__":
    main()
