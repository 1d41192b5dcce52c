#!/usr/bin/env python3
"""Fine-tuning against training from scratch, without the internet.

    python3 scripts/fine_tune_proof.py --train build/debian/examples/train_classifier
        [--work runs/fine-tune-proof] [--images 500] [--epochs 15]

Splits Debian's Fashion-MNIST (dataset-fashion-mnist) in two tasks: classes
0-4 (T-shirt/top ... Coat, all their training images) and classes 5-9
(Sandal ... Ankle boot, only --images training images). Trains a network on
the first task, then learns the second twice with the same flags: once
starting from the first network (--pretrained, a new classifier) and once
from scratch. Prints both test accuracies and times, and writes them to
WORK/results.json. Standard library only.
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import time

SOURCE = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def write_split(folder, prefix, images, labels, keep, limit):
    """The examples of classes `keep` (relabelled 0..), the first `limit`."""
    (n, h, w), pixels = images
    _, label_bytes = labels
    chosen = [i for i in range(n) if label_bytes[i] in keep][:limit]
    os.makedirs(folder, exist_ok=True)
    size = h * w
    with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(chosen), h, w))
        for i in chosen:
            f.write(pixels[i * size:(i + 1) * size])
    with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, len(chosen)))
        f.write(bytes(keep.index(label_bytes[i]) for i in chosen))
    return len(chosen)


def train(exe, out, *flags):
    start = time.monotonic()
    r = subprocess.run([exe, "--out", out, "--dataset", "idx", *flags],
                       capture_output=True, text=True)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        sys.exit(f"{out}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    summary = json.load(open(os.path.join(out, "summary.json")))
    return {"test_accuracy": summary["test_accuracy"],
            "best_test_accuracy": summary["best_test_accuracy"],
            "seconds": round(seconds, 1), "output": r.stdout}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="train_classifier")
    p.add_argument("--work", default="runs/fine-tune-proof")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--first-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threads", default="2")
    args = p.parse_args()
    data = {name: read_idx(os.path.join(SOURCE, f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz"))
            for name in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    first, second = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    a, b = os.path.join(args.work, "classes0-4"), os.path.join(args.work, "classes5-9")
    counts = {
        "first_train": write_split(a, "train", data["train-images"], data["train-labels"], first, 10**9),
        "first_test": write_split(a, "t10k", data["t10k-images"], data["t10k-labels"], first, 10**9),
        "second_train": write_split(b, "train", data["train-images"], data["train-labels"], second, args.images),
        "second_test": write_split(b, "t10k", data["t10k-images"], data["t10k-labels"], second, 10**9),
    }
    common = ["--arch", args.arch, "--threads", args.threads]
    results = {"counts": counts, "arch": args.arch}
    results["first"] = train(args.train, os.path.join(args.work, "first"), "--data", a,
                             "--epochs", str(args.first_epochs), *common)
    print(f"classes 0-4, {counts['first_train']} images, {args.first_epochs} epochs: "
          f"{100 * results['first']['test_accuracy']:.2f}% in {results['first']['seconds']} s")
    small = ["--data", b, "--epochs", str(args.epochs), "--batch-size", "64", *common]
    results["fine_tuned"] = train(args.train, os.path.join(args.work, "fine-tuned"), *small,
                                  "--pretrained", os.path.join(args.work, "first", "best.pt"))
    results["scratch"] = train(args.train, os.path.join(args.work, "scratch"), *small)
    for name in ("fine_tuned", "scratch"):
        r = results[name]
        print(f"classes 5-9 from {counts['second_train']} images, {args.epochs} epochs, "
              f"{name.replace('_', '-')}: {100 * r['test_accuracy']:.2f}% "
              f"(best {100 * r['best_test_accuracy']:.2f}%) in {r['seconds']} s")
    for r in results.values():
        if isinstance(r, dict):
            r.pop("output", None)
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
