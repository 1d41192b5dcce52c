"""Writes the fuzzers' seed corpora: small but real files of each kind, made
by PyTorch, safetensors and Pillow, plus slices of Debian's Fashion-MNIST.

    python3 fuzz/make_seeds.py --out fuzz/seeds
"""
import argparse
import collections
import gzip
import io
import os
import pickle
import struct
import zipfile

import torch


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def torch_bytes(obj, **kwargs):
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def small_state():
    torch.manual_seed(0)
    base = torch.randn(4, 3)
    state = collections.OrderedDict()
    state["conv.weight"] = torch.randn(2, 1, 1, 1)
    state["bn.weight"] = torch.ones(2)
    state["bn.running_mean"] = torch.zeros(2, dtype=torch.float16)
    state["bn.num_batches_tracked"] = torch.tensor(3)
    state["view"] = base[1:, ::2]  # shares storage, offset and strides
    state["base"] = base
    state["mask"] = torch.tensor([True, False])
    state["bf16"] = torch.arange(3, dtype=torch.bfloat16)
    return state


def torch_seeds(out):
    state = small_state()
    seeds = {
        "state_dict.pt": torch_bytes(state),
        "legacy.pt": torch_bytes(state, _use_new_zipfile_serialization=False),
        "protocol4.pt": torch_bytes(state, pickle_protocol=4),
        "training.pt": torch_bytes({
            "epoch": 3,
            "state_dict": state,
            "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}},
                          "param_groups": [{"lr": 0.1, "params": [0]}]},
            "args": argparse.Namespace(lr=0.1, arch="resnet18"),
            "best": 0.5,
            "note": "text",
            "big": 2 ** 70,
            "raw": b"\x00\x01",
        }),
        "module.pt": torch_bytes(torch.nn.Sequential(
            torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))),
        "ema_nested.pt": torch_bytes({"model": {"state_dict": state},
                                      "model_ema": state}),
    }
    for name, data in seeds.items():
        write(os.path.join(out, "torch_save"), name, data)
        write(os.path.join(out, "checkpoint_file"), name, data)
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
                write(os.path.join(out, "pickle"), name + ".pkl", z.read(pkl))
    plain = {
        "dict": {"a": 1, "b": [1.5, None, True], "c": (1, 2), "d": {3, 4}},
        "ordered": collections.OrderedDict([("x", b"bytes"), ("y", "str")]),
        "numbers": [0, -1, 255, 65535, 2 ** 31, -2 ** 63, 2 ** 100, 1e300],
        "shared": [[1, 2]] * 3,
    }
    for name, obj in plain.items():
        for protocol in (2, 3, 4, 5):
            write(os.path.join(out, "pickle"), f"{name}.p{protocol}",
                  pickle.dumps(obj, protocol=protocol))
    script = torch.jit.script(torch.nn.Linear(2, 1))
    buf = io.BytesIO()
    torch.jit.save(script, buf)
    write(os.path.join(out, "checkpoint_file"), "script.pt", buf.getvalue())
    write(os.path.join(out, "checkpoint_file"), "text.txt", b"not a checkpoint\n")


def hostile_seeds(out):
    """The hostile corpus of tests/python/make_hostile_files.py at seed size
    (64 KiB at most): to the file, torch.save and safetensors targets, and
    their pickles to the pickle and checkpoint-search targets."""
    import sys
    import tempfile

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests",
                                    "python"))
    import make_hostile_files

    with tempfile.TemporaryDirectory() as tmp:
        for entry in make_hostile_files.make(tmp, small=True):
            path = os.path.join(tmp, entry["file"])
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            name = "hostile_" + entry["file"]
            write(os.path.join(out, "checkpoint_file"), name, data)
            if name.endswith(".safetensors"):
                write(os.path.join(out, "safetensors"), name, data)
                continue
            write(os.path.join(out, "torch_save"), name, data)
            pkl = None
            if data[:2] == b"PK":
                try:
                    with zipfile.ZipFile(io.BytesIO(data)) as z:
                        names = [n for n in z.namelist()
                                 if n.endswith("data.pkl")]
                        pkl = z.read(names[0]) if names else None
                except Exception:
                    pkl = None
            if pkl:
                write(os.path.join(out, "pickle"), name + ".pkl", pkl)
                write(os.path.join(out, "checkpoint_search"), name + ".pkl",
                      pkl)
    for name in os.listdir(os.path.join(out, "pickle")):
        if not name.startswith("hostile_"):
            with open(os.path.join(out, "pickle", name), "rb") as f:
                write(os.path.join(out, "checkpoint_search"), name, f.read())


def safetensors_seeds(out):
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in small_state().items()
             if k not in ("view",)}
    state["int8"] = torch.tensor([-1, 2], dtype=torch.int8)
    state["f64"] = torch.tensor([1.0], dtype=torch.float64)
    state["empty"] = torch.zeros(0, 3)
    data = save(state, metadata={"format": "pt", "note": "seed"})
    for folder in ("safetensors", "checkpoint_file"):
        write(os.path.join(out, folder), "state.safetensors", data)
        write(os.path.join(out, folder), "one.safetensors",
              save({"w": torch.ones(2, 2)}))


def int8_seeds(out):
    """Files of int8 networks as save_quantized writes them: a stem and a
    basic block; a stem with max pooling and a bottleneck with a shortcut
    convolution and no classifier."""
    import json

    from safetensors.torch import save

    torch.manual_seed(2)

    def conv(tensors, convs, name, cin, cout, k, stride=1):
        tensors[name + ".weight"] = torch.randint(
            -127, 128, (cout, cin, k, k), dtype=torch.int8)
        tensors[name + ".weight_scale"] = torch.rand(cout) * 0.01 + 0.001
        tensors[name + ".bias"] = torch.randn(cout) * 0.1
        convs[name] = {"stride": [stride, stride], "padding": [k // 2, k // 2],
                       "dilation": [1, 1], "groups": 1,
                       "input": [0.02, 0], "output": [0.03, 0]}

    def network(name, max_pool, blocks, classes):
        tensors, convs = {}, {}
        conv(tensors, convs, "conv1", 3, 4, 3, 2 if max_pool else 1)
        stages = [[]]
        for b, (kernels, widths, stride, downsample) in enumerate(blocks):
            cin = 4
            for k, (kernel, width) in enumerate(zip(kernels, widths)):
                conv(tensors, convs, f"layer1.{b}.conv{k + 1}", cin, width,
                     kernel, stride if k == len(kernels) // 2 else 1)
                cin = width
            if downsample:
                conv(tensors, convs, f"layer1.{b}.downsample", 4, cin, 1,
                     stride)
            stages[0].append({"convs": len(kernels), "downsample": downsample,
                              "zero_pad_stride": 0})
        if classes:
            tensors["fc.weight"] = torch.randn(classes, cin)
            tensors["fc.bias"] = torch.randn(classes)
        description = {"version": 1, "in_channels": 3, "max_pool": max_pool,
                       "input": [0.02, 128], "convs": convs,
                       "stages": stages}
        write(os.path.join(out, "int8_file"), name, save(
            tensors, metadata={"format": "pt",
                               "resnet.int8": json.dumps(description)}))

    network("basic.safetensors", False, [((3, 3), (4, 4), 1, False)], 3)
    network("bottleneck.safetensors", True,
            [((1, 3, 1), (2, 2, 8), 2, True)], 0)


def idx_bytes(array_type, dims, payload):
    return bytes([0, 0, array_type, len(dims)]) + b"".join(
        struct.pack(">I", d) for d in dims) + payload


def idx_seeds(out, fashion):
    folder = os.path.join(out, "idx")
    if os.path.isdir(fashion):
        with gzip.open(os.path.join(fashion, "t10k-images-idx3-ubyte.gz")) as f:
            head = f.read(16 + 8 * 28 * 28)
        images = idx_bytes(8, (8, 28, 28), head[16:])
        write(folder, "fashion-images-8.idx", images)
        write(folder, "fashion-images-8.idx.gz", gzip.compress(images))
        with open(os.path.join(fashion, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
            write(folder, "fashion-labels.idx.gz", f.read())
    write(folder, "labels.idx", idx_bytes(8, (5,), bytes(range(5))))
    write(folder, "int16.idx", idx_bytes(0x0B, (2, 2), struct.pack(">4h", 1, -2, 3, -4)))
    write(folder, "int32.idx", idx_bytes(0x0C, (3,), struct.pack(">3i", 7, -8, 9)))
    write(folder, "float.idx", idx_bytes(0x0D, (2,), struct.pack(">2f", 0.5, -1.0)))
    write(folder, "double.idx", idx_bytes(0x0E, (1, 1), struct.pack(">d", 3.25)))
    write(folder, "int8.idx", idx_bytes(0x09, (2,), b"\x80\x7f"))
    # One IDX file split over two gzip members, as `cat a.gz b.gz` makes.
    write(folder, "two-members.gz",
          gzip.compress(b"\x00\x00\x08\x01") +
          gzip.compress(b"\x00\x00\x00\x02\x01\x02"))


def cifar_seeds(out, fashion):
    folder = os.path.join(out, "cifar")
    torch.manual_seed(1)
    pixels = [bytes(torch.randint(0, 256, (3072,), dtype=torch.uint8).tolist())
              for _ in range(3)]
    ten = b"".join(bytes([i]) + p for i, p in enumerate(pixels))
    hundred = b"".join(bytes([i, 40 + i]) + p for i, p in enumerate(pixels))
    write(folder, "cifar10.bin", ten)
    write(folder, "cifar10.bin.gz", gzip.compress(ten))
    write(folder, "cifar100.bin", hundred)


def image_seeds(out, fashion):
    from PIL import Image

    folder = os.path.join(out, "image")
    torch.manual_seed(2)
    rgb = Image.frombytes(
        "RGB", (7, 5), bytes(torch.randint(0, 256, (7 * 5 * 3,)).tolist()))
    kinds = {
        "rgb.png": (rgb, "PNG", {}),
        "grey.png": (rgb.convert("L"), "PNG", {}),
        "rgba.png": (rgb.convert("RGBA"), "PNG", {}),
        "palette.png": (rgb.convert("P"), "PNG", {}),
        "interlaced.png": (rgb, "PNG", {"interlace": 1}),
        "16bit.png": (rgb.convert("L").convert("I"), "PNG", {}),
        "baseline.jpg": (rgb, "JPEG", {"quality": 90}),
        "progressive.jpg": (rgb, "JPEG", {"progressive": True}),
        "grey.jpg": (rgb.convert("L"), "JPEG", {}),
        "rgb.bmp": (rgb, "BMP", {}),
        "rgb.gif": (rgb.convert("P"), "GIF", {}),
        "rgb.tga": (rgb, "TGA", {}),
        "rle.tga": (rgb, "TGA", {"compression": "tga_rle"}),
        "rgb.ppm": (rgb, "PPM", {}),
        "grey.pgm": (rgb.convert("L"), "PPM", {}),
    }
    for name, (image, fmt, options) in kinds.items():
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        write(folder, name, buf.getvalue())
    if os.path.isdir(fashion):
        with gzip.open(os.path.join(fashion, "t10k-images-idx3-ubyte.gz")) as f:
            f.read(16)
            item = Image.frombytes("L", (28, 28), f.read(28 * 28))
        buf = io.BytesIO()
        item.save(buf, "PNG")
        write(folder, "fashion-item.png", buf.getvalue())


def flag_seeds(out):
    lines = {
        "train_classifier": [
            ["--arch", "resnet20", "--epochs", "2", "--batch-size", "64",
             "--lr", "0.05", "--train-limit", "1000", "--seed", "3"],
            ["--data", "/tmp/x", "--dataset", "cifar10", "--stem", "cifar",
             "--no-flip", "--erasing", "0.5", "--warmup-epochs", "0.1",
             "--resume", "--out", "runs/a", "--threads", "2"],
            ["--label-smoothing", "0.2", "--no-augment", "--image-size", "32",
             "--momentum", "0.8", "--no-nesterov", "--weight-decay", "1e-4",
             "--pad", "2", "--test-limit", "10", "--stop-after", "5",
             "--device", "cpu"],
            ["--sync-bn", "--timeout", "30", "--workers", "1"],
            ["--help"],
        ],
        "classify": [
            ["--weights", "w.pt", "--arch", "resnet18", "--topk", "3",
             "a.png", "b.jpg"],
            ["--weights", "w.safetensors", "--arch", "resnet50", "--entry",
             "model_ema", "--device", "cpu", "--classes", "c.txt", "--resize",
             "256", "--crop", "224", "x.png"],
        ],
        "benchmark": [
            ["--arch", "resnet50", "--batch", "8", "--size", "224", "--mode",
             "train", "--dtype", "bf16", "--channels-last", "--json"],
            ["--arch", "resnet18", "--mode", "infer", "--fuse", "--cuda-graph",
             "--warmup", "1", "--iters", "2", "--device", "cuda:0"],
        ],
        "load_speed": [
            ["--file", "w.pt", "--into", "resnet18", "--repeat", "3", "--json"],
            ["--file", "w.safetensors"],
        ],
    }
    for program, commands in lines.items():
        for i, words in enumerate(commands):
            write(os.path.join(out, "flags_" + program), f"line{i}",
                  b"\0".join(w.encode() for w in words))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    torch_seeds(args.out)
    hostile_seeds(args.out)
    safetensors_seeds(args.out)
    int8_seeds(args.out)
    idx_seeds(args.out, args.fashion)
    cifar_seeds(args.out, args.fashion)
    image_seeds(args.out, args.fashion)
    flag_seeds(args.out)


if __name__ == "__main__":
    main()
