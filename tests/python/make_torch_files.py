"""Writes torch.save files in every layout the C++ reader must handle, and a
manifest of what each holds, for tests/test_torch_files.cpp.

Usage: make_torch_files.py --out DIR

DIR/manifest.json lists, per file, checks on values reached by a path from
the root object: each path step is "s:<str key>", "i:<int key>", "n:<index
in a list/tuple/set>" or "a:<attribute of an object's state>". Tensors are
described by dtype, shape, strides, storage offset, requires_grad, a storage
group (tensors of one group share memory, in one file) and a side file with
their values, contiguous and little-endian, so that C++ compares bit for bit
without using the reader under test. Works with torch 1.13 and 2.x.
"""

import argparse
import collections
import hashlib
import json
import os
import sys

import torch
import torchvision

try:
    import numpy as np
except ImportError:  # numpy is optional for torch 2.x
    np = None


def small_net():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def storage_ptr(t):
    if hasattr(t, "untyped_storage"):
        return t.untyped_storage().data_ptr()
    return t.storage().data_ptr()


def tensor_bytes(t):
    c = t.detach().contiguous().reshape(-1)
    if c.numel() == 0:
        return b""
    return c.view(torch.uint8).numpy().tobytes()


class Manifest:
    def __init__(self, out):
        self.out = out
        self.files = []

    def add(self, name, obj, fmt, **save_args):
        path = os.path.join(self.out, name)
        torch.save(obj, path, **save_args)
        checks = []
        groups = {}
        self.walk(obj, [], checks, groups)
        self.files.append({"file": name, "format": fmt, "checks": checks})

    def walk(self, obj, path, checks, groups):
        if isinstance(obj, torch.Tensor):
            ptr = storage_ptr(obj)
            group = None
            if ptr != 0:
                group = groups.setdefault(ptr, len(groups))
            data = tensor_bytes(obj)
            # Named by content: equal tensors in several files share one.
            bin_name = hashlib.sha1(data).hexdigest()[:20] + ".bin"
            bin_path = os.path.join(self.out, bin_name)
            if not os.path.exists(bin_path):
                with open(bin_path, "wb") as f:
                    f.write(data)
            checks.append(
                {
                    "path": path,
                    "type": "tensor",
                    "dtype": dtype_name(obj.dtype),
                    "shape": list(obj.shape),
                    "stride": list(obj.stride()),
                    "offset": obj.storage_offset(),
                    "requires_grad": bool(obj.requires_grad),
                    "group": group,
                    "bin": bin_name,
                }
            )
        elif np is not None and isinstance(obj, (np.generic, np.ndarray)):
            checks.append({"path": path, "type": "object"})
        elif isinstance(obj, bool):
            checks.append({"path": path, "type": "bool", "value": obj})
        elif isinstance(obj, int):
            if -(2**63) <= obj < 2**63:
                checks.append({"path": path, "type": "int", "value": obj})
            else:
                checks.append({"path": path, "type": "bigint"})
        elif isinstance(obj, float):
            checks.append({"path": path, "type": "float", "value": obj})
        elif isinstance(obj, str):
            checks.append({"path": path, "type": "str", "value": obj})
        elif isinstance(obj, (bytes, bytearray)):
            checks.append({"path": path, "type": "bytes", "hex": obj.hex()})
        elif obj is None:
            checks.append({"path": path, "type": "none"})
        elif isinstance(obj, dict):
            keys = list(obj.keys())
            check = {
                "path": path,
                "type": "dict",
                "ordered": type(obj) is collections.OrderedDict,
                "len": len(keys),
                "metadata": hasattr(obj, "_metadata"),
            }
            if all(isinstance(k, str) for k in keys):
                check["keys"] = keys
            checks.append(check)
            for k, v in obj.items():
                if isinstance(k, str):
                    step = "s:" + k
                elif isinstance(k, int) and not isinstance(k, bool):
                    step = "i:%d" % k
                else:
                    continue
                self.walk(v, path + [step], checks, groups)
        elif isinstance(obj, (list, tuple)):
            kind = "list" if isinstance(obj, list) else "tuple"
            checks.append({"path": path, "type": kind, "len": len(obj)})
            for i, v in enumerate(obj):
                self.walk(v, path + ["n:%d" % i], checks, groups)
        elif isinstance(obj, (set, frozenset)):
            checks.append({"path": path, "type": "set", "len": len(obj)})
        elif isinstance(obj, argparse.Namespace):
            checks.append(
                {"path": path, "type": "object", "name": "argparse.Namespace"}
            )
            for k, v in vars(obj).items():
                self.walk(v, path + ["a:" + k], checks, groups)
        else:
            # numpy values, torch.device and the like: opaque, but loadable.
            checks.append({"path": path, "type": "object"})

    def write(self):
        with open(os.path.join(self.out, "manifest.json"), "w") as f:
            json.dump(
                {"torch": torch.__version__, "files": self.files}, f, indent=1
            )


def tensor_zoo():
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    zoo = collections.OrderedDict()
    zoo["float32"] = torch.randn(3, 5)
    zoo["float64"] = torch.randn(2, 3, dtype=torch.float64)
    zoo["float16"] = torch.randn(7).half()
    zoo["bfloat16"] = torch.randn(2, 2).bfloat16()
    zoo["bool"] = torch.tensor([True, False, True])
    zoo["int8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    zoo["int16"] = torch.tensor([-32768, 5, 32767], dtype=torch.int16)
    zoo["int32"] = torch.tensor([-(2**31), 7, 2**31 - 1], dtype=torch.int32)
    zoo["int64"] = torch.tensor([-(2**63), 9, 2**63 - 1], dtype=torch.int64)
    zoo["uint8"] = torch.arange(0, 256, 51, dtype=torch.uint8)
    zoo["complex64"] = torch.randn(3, dtype=torch.complex64)
    zoo["complex128"] = torch.randn(2, 2, dtype=torch.complex128)
    zoo["scalar"] = torch.tensor(3.25)
    zoo["scalar_int"] = torch.tensor(-4, dtype=torch.int64)
    zoo["empty"] = torch.zeros(0, 3)
    zoo["empty_int"] = torch.zeros(2, 0, dtype=torch.int32)
    zoo["base"] = base
    zoo["transposed"] = base.t()
    zoo["stepped"] = base[1:, ::2]
    zoo["row"] = base[2]
    zoo["narrow"] = base.narrow(1, 2, 3)
    zoo["expanded"] = torch.randn(3, 1).expand(3, 4)
    zoo["parameter"] = torch.nn.Parameter(torch.randn(2, 3))
    zoo["frozen_parameter"] = torch.nn.Parameter(torch.randn(2), requires_grad=False)
    zoo["requires_grad"] = torch.randn(4, requires_grad=True)
    return zoo


def python_values():
    values = collections.OrderedDict()
    values["none"] = None
    values["true"] = True
    values["false"] = False
    values["small"] = 7
    values["negative"] = -300
    values["int32"] = 2**31 - 1
    values["int64"] = -(2**62)
    values["big"] = 2**70
    values["float"] = 93.1
    values["tiny_float"] = 1e-300
    values["str"] = "ascii"
    values["unicode"] = "\u00e9t\u00e9 \u2603 \U0001f600"
    values["bytes"] = bytes(range(0, 256, 17)) + b"\xff\x00"
    values["bytearray"] = bytearray(b"\x01\x80\xfe")
    values["list"] = [1, [2, [3, []]], "x"]
    values["tuple"] = (1, 2.5, ("a",))
    values["empty_tuple"] = ()
    values["set"] = {1, 2, 3}
    values["frozenset"] = frozenset({"a"})
    values["int_keys"] = {0: "zero", 5: "five"}
    values["size"] = torch.Size([2, 3])
    values["dtype"] = torch.float16
    values["device"] = torch.device("cpu")
    if np is not None:
        values["np_scalar"] = np.float64(1.5)
        values["np_array"] = np.arange(6, dtype=np.int32).reshape(2, 3)
    values["namespace"] = argparse.Namespace(lr=0.1, model="resnet18", epochs=90)
    return values


def reference_checkpoint():
    net = small_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        net(torch.randn(2, 3, 3, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    args = argparse.Namespace(
        data_path="/datasets/imagenet",
        model="resnet18",
        device="cuda",
        batch_size=32,
        epochs=90,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        lr_steps=[16, 22],
        resume="",
        amp=False,
    )
    return {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": 2,
        "args": args,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    m = Manifest(out)

    resnet = torchvision.models.resnet18(num_classes=10)
    resnet.eval()
    m.add("resnet18_state_dict.pt", resnet.state_dict(), "zip")
    m.add("plain_dict.pt", dict(small_net().state_dict()), "zip")
    zoo = tensor_zoo()
    for protocol in (2, 3, 4, 5):
        m.add(
            "tensors_protocol%d.pt" % protocol, zoo, "zip", pickle_protocol=protocol
        )
        m.add(
            "values_protocol%d.pt" % protocol,
            python_values(),
            "zip",
            pickle_protocol=protocol,
        )
    m.add("tensors_legacy.pt", zoo, "legacy", _use_new_zipfile_serialization=False)
    m.add(
        "values_legacy.pt",
        python_values(),
        "legacy",
        _use_new_zipfile_serialization=False,
    )
    m.add(
        "resnet18_legacy.pt",
        resnet.state_dict(),
        "legacy",
        _use_new_zipfile_serialization=False,
    )
    # DataParallel moves its module to a GPU where there is one.
    parallel = torch.nn.DataParallel(small_net()).cpu()
    m.add(
        "dataparallel_checkpoint.pt",
        {"net": parallel.state_dict(), "acc": 93.1, "epoch": 7},
        "zip",
    )
    m.add("reference_checkpoint.pt", reference_checkpoint(), "zip")
    m.add(
        "reference_checkpoint_legacy.pt",
        reference_checkpoint(),
        "legacy",
        _use_new_zipfile_serialization=False,
    )
    m.add("single_tensor.pt", torch.arange(10, dtype=torch.float32)[2:8:2], "zip")
    m.write()
    print("wrote", len(m.files), "files to", out, "with torch", torch.__version__)


if __name__ == "__main__":
    sys.exit(main())
