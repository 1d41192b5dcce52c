#!/usr/bin/env python3
"""End-to-end tests of examples/train_classifier.cpp.

    check_training.py --train build/examples/train_classifier --work DIR

Makes small datasets in every supported format, and checks that: a model
learns (loss falls, accuracy far above chance) on them and on a subset of the
real Fashion-MNIST when it is installed; the metrics CSV, the curves picture,
the checkpoints and summary.json are written and parse; a run stopped part-way
(by --stop-after or by Ctrl-C) and resumed takes exactly the steps an
uninterrupted run takes; missing and malformed datasets fail with a clear
message. Exit status 0 when everything holds.
"""
import argparse
import csv
import gzip
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time

import torch
from PIL import Image

from checklist import check, finish

# Debian's dataset-fashion-mnist, where train_classifier looks by default;
# RESNET_FASHION_MNIST names a copy elsewhere (passed with --data).
DEFAULT_FASHION = "/usr/share/datasets/fashion-mnist"
FASHION = os.environ.get("RESNET_FASHION_MNIST", DEFAULT_FASHION)


def pattern(label, size, rng, channels=1):
    """An image whose class shows as a bright block at a class-specific place."""
    px = [[rng.randint(0, 60) for _ in range(size * size)] for _ in range(channels)]
    cells = 4
    cell = size // cells
    r, c = divmod(label % (cells * cells), cells)
    for ch in range(channels):
        for y in range(r * cell, r * cell + cell):
            for x in range(c * cell, c * cell + cell):
                px[ch][y * size + x] = 200 + rng.randint(0, 55)
    return px


def write_idx(folder, prefix, n, rng, gz):
    images = bytearray(struct.pack(">IIII", 0x803, n, 28, 28))
    labels = bytearray(struct.pack(">II", 0x801, n))
    for i in range(n):
        label = i % 10
        images += bytes(pattern(label, 28, rng)[0])
        labels.append(label)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    with opener(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), "wb") as f:
        f.write(images)
    with opener(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), "wb") as f:
        f.write(labels)


def make_mnist(folder, gz, n_train=800, n_test=200):
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(1)
    write_idx(folder, "train", n_train, rng, gz)
    write_idx(folder, "t10k", n_test, rng, gz)


def make_cifar(folder):
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(2)
    for name, n in [("data_batch_1.bin", 300), ("data_batch_2.bin", 300), ("test_batch.bin", 200)]:
        with open(os.path.join(folder, name), "wb") as f:
            for i in range(n):
                label = i % 10
                f.write(bytes([label]))
                for ch in pattern(label, 32, rng, channels=3):
                    f.write(bytes(ch))


def make_folder(folder):
    rng = random.Random(3)
    for split, n in [("train", 40), ("test", 12)]:
        for label, name in enumerate(["circle", "square", "stripe"]):
            d = os.path.join(folder, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                px = pattern(label * 5, 24, rng, channels=3)
                data = bytes(v for p in zip(*px) for v in p)
                Image.frombytes("RGB", (24, 24), data).save(os.path.join(d, f"{i:03d}.png"))


class Trainer:
    def __init__(self, exe, work):
        self.exe, self.work = exe, work

    def run(self, out, *args, expect=0, env=None):
        cmd = [self.exe, "--out", os.path.join(self.work, out), "--threads", "2"] + list(args)
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        print(f"+ {' '.join(cmd)}  -> {r.returncode} ({time.time() - t:.1f} s)", flush=True)
        if r.returncode != expect:
            print(r.stdout[-3000:], r.stderr[-3000:])
        return r


def damaged_copy(src, dst, name_part, damage):
    """Copies the folder `src` to `dst`, damaging the file whose name
    contains `name_part`."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        with open(os.path.join(dst, name), "wb") as f:
            f.write(damage(data) if name_part in name else data)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def steps(out):
    return {int(r["step"]): float(r["loss"]) for r in read_csv(os.path.join(out, "steps.csv"))}


def same_steps(reference, resumed, first, what):
    common = [s for s in resumed if s >= first]
    worst = max((abs(resumed[s] - reference[s]) / max(abs(reference[s]), 1e-12)
                 for s in common), default=1.0)
    check(len(common) > 0 and all(s in reference for s in common) and worst <= 1e-5,
          f"{what}: steps {first}..{max(common, default=0)} after resuming match the "
          f"uninterrupted run (worst relative difference {worst:.2g})")


def log_rows(out):
    """steps.csv as (step, loss) rows and metrics.csv without its clock
    columns, as lists: a resumed run must not repeat or lose a row."""
    step_rows = [(r["step"], r["loss"]) for r in read_csv(os.path.join(out, "steps.csv"))]
    metric_rows = [(r["epoch"], r["train_loss"], r["train_accuracy"], r["test_loss"],
                    r["test_accuracy"]) for r in read_csv(os.path.join(out, "metrics.csv"))]
    return step_rows, metric_rows


def close_rows(rows, reference):
    """The same steps, once each and in order, with losses within 1e-5."""
    return [r[0] for r in rows] == [r[0] for r in reference] and all(
        abs(float(a[1]) - float(b[1])) <= 1e-5 * max(abs(float(b[1])), 1e-12)
        for a, b in zip(rows, reference))


def crash_safety(t, w, common, reference):
    """SIGKILL mid-epoch, before the first checkpoint, and at each point of
    writing a checkpoint; then --resume: the run continues from the last
    complete checkpoint and ends exactly as the uninterrupted one."""
    full_steps, full_metrics = log_rows(w("full"))
    full_summary = json.load(open(w("full", "summary.json")))
    per_epoch = 13  # 800 images in batches of 64
    cases = [
        ("step:20", per_epoch, "SIGKILL mid-epoch (step 20)"),
        ("step:5", None, "SIGKILL before the first checkpoint (step 5)"),
        ("checkpoint:2:model", per_epoch, "SIGKILL after writing the model file"),
        ("checkpoint:2:optimizer", per_epoch, "SIGKILL after writing the optimizer file"),
        ("checkpoint:2:state", per_epoch,
         "SIGKILL between the state file's temporary copy and its rename"),
    ]
    for at, expected_step, what in cases:
        name = "crash-" + at.replace(":", "-")
        out = w(name)
        r = t.run(name, *common, env=dict(os.environ, RESNET_CRASH_AT=at),
                  expect=-signal.SIGKILL)
        check(r.returncode == -signal.SIGKILL, f"{what}: the process is killed ({r.returncode})")
        state_path = os.path.join(out, "last_state.json")
        if expected_step is None:
            check(not os.path.exists(state_path), f"{what}: no checkpoint yet")
        else:
            state = json.load(open(state_path))
            model = os.path.join(out, "checkpoint", f"model-{state['step']}.pt")
            weights = torch.load(model, weights_only=True)
            last = torch.load(os.path.join(out, "last.pt"), weights_only=True)
            check(state["step"] == expected_step and "fc.weight" in weights
                  and os.path.exists(os.path.join(out, "checkpoint",
                                                  f"optimizer-{state['step']}.pt"))
                  and all(torch.equal(weights[k], last[k]) for k in weights),
                  f"{what}: the last complete checkpoint (step {state['step']}) is intact "
                  "and last.pt holds its weights")
        r = t.run(name, *common, "--resume")
        started = "from the start: no checkpoint yet in" if expected_step is None else "resuming"
        check(r.returncode == 0 and started in r.stdout, f"{what}: --resume continues ({started})")
        step_rows, metric_rows = log_rows(out)
        summary = json.load(open(os.path.join(out, "summary.json")))
        check(close_rows(step_rows, full_steps) and metric_rows == full_metrics
              and summary["test_accuracy"] == full_summary["test_accuracy"]
              and summary["confusion_matrix"] == full_summary["confusion_matrix"],
              f"{what}: steps.csv, metrics.csv and the final metrics equal the "
              f"uninterrupted run's (accuracy {summary['test_accuracy']})")
        leftovers = [f for f in os.listdir(out) if ".tmp" in f]
        check(not leftovers and sorted(os.listdir(os.path.join(out, "checkpoint"))) ==
              [f"model-{2 * per_epoch}.pt", f"optimizer-{2 * per_epoch}.pt"],
              f"{what}: no temporary or stale checkpoint files remain ({leftovers})")

    # A kill from outside at whatever moment the run has reached.
    out = w("crash-external")
    proc = subprocess.Popen([t.exe, "--out", out, "--threads", "2"] + common,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out, "steps.csv")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and len(open(log).read().splitlines()) > 16:
            break
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=120)
    killed_at = len(log_rows(out)[0])
    r = t.run("crash-external", *common, "--resume")
    step_rows, metric_rows = log_rows(out)
    check(r.returncode == 0 and close_rows(step_rows, full_steps)
          and metric_rows == full_metrics,
          f"SIGKILL from outside after step {killed_at}: the resumed run equals the "
          "uninterrupted one")


def classify_round_trip(classify, w, run, size, channels):
    """classify --weights RUN/best.pt reads config.json beside it: the
    architecture, channels, normalization and class names the trainer used.
    Images in the other colour kind too (RGB for a grayscale network,
    grayscale for an RGB one) are converted."""
    config = json.load(open(w(run, "config.json")))
    names = config["pretrained_cfg"].get("label_names", [])
    check(config["architecture"] == "resnet20"
          and config["pretrained_cfg"]["input_size"] == [channels, size, size]
          and len(names) == 10 and len(config["pretrained_cfg"]["mean"]) == channels,
          f"{run}/config.json describes the network: {config['pretrained_cfg']['input_size']}")
    rng = random.Random(7)
    folder = w(run + "-images")
    os.makedirs(folder, exist_ok=True)
    paths, labels = [], []
    for i in range(20):
        label = i % 10
        px = pattern(label, size, rng, channels=channels)
        mode = "L" if channels == 1 else "RGB"
        img = Image.frombytes(mode, (size, size), bytes(v for p in zip(*px) for v in p))
        if i % 2:  # the other colour kind, and twice the size
            img = img.convert("RGB" if channels == 1 else "L").resize((2 * size, 2 * size))
        paths.append(os.path.join(folder, f"{i:02d}.png"))
        img.save(paths[-1])
        labels.append(label)
    r = subprocess.run([classify, "--weights", w(run, "best.pt"), "--topk", "1",
                        "--device", "cpu"] + paths, capture_output=True, text=True)
    tops = [line.split()[-1] for line in r.stdout.splitlines() if line.startswith("   1.")]
    right = sum(1 for top, label in zip(tops, labels) if top == names[label])
    check(r.returncode == 0 and len(tops) == 20 and right >= 16,
          f"classify --weights {run}/best.pt alone: {right}/20 named right "
          f"(exit {r.returncode}) {r.stderr.strip()}")


def lower_precision(quantize, w, summary):
    """quantize_model on the trained network: float32 as the trainer measured
    it, bfloat16 and int8 (calibrated, saved, read back) close to it."""
    out = w("mnist-run", "int8", "model.safetensors")
    r = subprocess.run([quantize, "--weights", w("mnist-run", "best.pt"), "--data",
                        w("mnist"), "--calibration", "64", "--out", out, "--json"],
                       capture_output=True, text=True)
    if torch.__version__.startswith("1."):
        check(r.returncode == 1 and "onednn::qconv2d_pointwise" in r.stderr,
              "quantize_model on LibTorch 1.x says what it lacks: " + r.stderr.strip()[-200:])
        return
    check(r.returncode == 0, "quantize_model runs: " + r.stderr.strip()[-300:])
    if r.returncode != 0:
        return
    m = json.loads(r.stdout)
    print("quantize_model:", m)
    check(m["test_images"] == 200 and m["calibration_images"] == 64
          and os.path.isfile(out), "quantize_model: 200 test images, 64 to calibrate, the file")
    check(abs(m["fp32_accuracy"] - summary["best_test_accuracy"]) <= 0.01,
          f"float32 accuracy {m['fp32_accuracy']} as the trainer's best.pt had: "
          f"{summary['best_test_accuracy']}")
    for p in ("bf16", "int8"):
        check(m[f"{p}_accuracy"] >= m["fp32_accuracy"] - 0.03
              and m[f"{p}_top1_agreement"] >= 0.95,
              f"{p}: accuracy {m[f'{p}_accuracy']} within 3 points of float32's, "
              f"top-1 agreement {m[f'{p}_top1_agreement']} >= 0.95")
    check(m["fp32_top1_agreement"] == 1 and m["cpu_features"] != "",
          "float32 agrees with itself; the CPU's instruction sets are named")


def fine_tuning(t, w):
    """--pretrained: the grayscale 10-class MNIST network starts the RGB
    3-class image-folder task; its classifier is new, its first convolution
    adapted to three channels, the stem and layer1 frozen."""
    r = t.run("finetune", "--data", w("images"), "--epochs", "2", "--batch-size", "16",
              "--pretrained", w("mnist-run", "best.pt"), "--freeze", "1",
              "--backbone-lr", "0.1", "--std", "0.25")
    check(r.returncode == 0 and "fine-tuning from" in r.stdout
          and "skipped (new classifier): fc.weight, fc.bias (2)" in r.stdout
          and "conv1.weight 1 -> 3 input channels" in r.stdout
          and "pretrained layers at 0.1x" in r.stdout,
          "--pretrained says what it skipped, adapted and froze: " + r.stderr.strip())
    if r.returncode != 0:
        return
    # The mean the weights were trained with (gray, for each of R, G and B),
    # the std given.
    pretrained = json.load(open(w("mnist-run", "config.json")))["pretrained_cfg"]
    tuned = json.load(open(w("finetune", "config.json")))["pretrained_cfg"]
    check(tuned["mean"] == pretrained["mean"] * 3 and tuned["std"] == [0.25] * 3,
          f"normalized with the weights' mean and the given std: {tuned['mean']}, "
          f"{tuned['std']}")
    before = torch.load(w("mnist-run", "best.pt"), weights_only=True)
    after = torch.load(w("finetune", "last.pt"), weights_only=True)
    frozen = [k for k in after if k.startswith(("layer1.", "bn1.")) and "num_batches" not in k]
    check(frozen and all(torch.equal(before[k], after[k]) for k in frozen),
          f"the frozen stem and layer1 kept their weights and statistics ({len(frozen)} tensors)")
    check(torch.allclose(after["conv1.weight"], before["conv1.weight"].repeat(1, 3, 1, 1) / 3),
          "the grayscale filters became RGB ones (repeated, a third each)")
    check(not torch.equal(before["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])
          and list(after["fc.weight"].shape) == [3, 64],
          "the rest learnt, with a new 3-class classifier")
    bad = t.run("finetune-bad", "--data", w("images"), "--epochs", "1",
                "--pretrained", w("nowhere.pt"), expect=1)
    check(bad.returncode == 1 and "nowhere.pt" in bad.stderr,
          "--pretrained names a file that is not there: " + bad.stderr.strip())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True)
    p.add_argument("--classify", required=True)
    p.add_argument("--quantize", required=True, help="quantize_model")
    p.add_argument("--work", required=True)
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    w = lambda *parts: os.path.join(args.work, *parts)  # noqa: E731
    t = Trainer(args.train, args.work)

    make_mnist(w("mnist"), gz=False)
    make_mnist(w("mnist-gz"), gz=True)
    make_cifar(w("cifar"))
    make_folder(w("images"))

    # Learning, outputs, and the format of each.
    r = t.run("mnist-run", "--data", w("mnist"), "--epochs", "3", "--batch-size", "64")
    check(r.returncode == 0, "trains on an MNIST-format folder")
    out = w("mnist-run")
    rows = read_csv(os.path.join(out, "metrics.csv")) if r.returncode == 0 else []
    check(len(rows) == 3, f"metrics.csv has one row per epoch ({len(rows)})")
    if len(rows) == 3:
        check(float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]),
              f"training loss falls ({rows[0]['train_loss']} -> {rows[-1]['train_loss']})")
        check(float(rows[-1]["test_accuracy"]) > 0.9,
              f"test accuracy {rows[-1]['test_accuracy']} > 0.9 (chance 0.1)")
    # The curves are an SVG picture the trainer draws itself: one line per
    # series, a point per epoch.
    svg_path = os.path.join(out, "curves.svg")
    if os.path.exists(svg_path):
        import xml.etree.ElementTree as ET
        root = ET.parse(svg_path).getroot()
        lines = [e for e in root.iter() if e.tag.endswith("polyline")]
        counts = [len(e.get("points").split()) for e in lines]
        check(counts == [3, 3, 3, 3],
              f"curves.svg has train and test lines of 3 points in both charts ({counts})")
    else:
        check(False, "curves.svg is written")
    summary = json.load(open(os.path.join(out, "summary.json")))
    check(summary["arch"] == "resnet20" and summary["epochs"] == 3
          and 0.9 < summary["test_accuracy"] <= 1 and summary["seconds"] > 0
          and len(summary["confusion_matrix"]) == 10
          and sum(map(sum, summary["confusion_matrix"])) == 200,
          "summary.json holds arch, epochs, test_accuracy, seconds, the confusion matrix")
    check("per-class test accuracy" in r.stdout and "confusion matrix" in r.stdout,
          "the report prints per-class accuracy and the confusion matrix")
    for name in ("best.pt", "last.pt"):
        state = torch.load(os.path.join(out, name), weights_only=True)
        check(isinstance(state, dict) and list(state["fc.weight"].shape) == [10, 64]
              and state["conv1.weight"].shape[1] == 1,
              f"{name} opens in Python: a state dict with fc.weight [10, 64]")

    classify_round_trip(args.classify, w, "mnist-run", 28, 1)
    lower_precision(args.quantize, w, summary)

    r = t.run("gz-run", "--data", w("mnist-gz"), "--dataset", "mnist", "--epochs", "1")
    check(r.returncode == 0, "reads gzipped IDX files")
    # These classes differ by where a bright cell is, which a flip moves to
    # another class's place: without flips they are learnt exactly.
    r = t.run("cifar-run", "--data", w("cifar"), "--epochs", "3", "--batch-size", "32",
              "--no-flip")
    s = json.load(open(w("cifar-run", "summary.json"))) if r.returncode == 0 else {}
    check(r.returncode == 0 and "cifar10" in r.stdout and s.get("test_accuracy", 0) > 0.9,
          f"trains on CIFAR-10 binary files (accuracy {s.get('test_accuracy')})")
    classify_round_trip(args.classify, w, "cifar-run", 32, 3)
    fine_tuning(t, w)
    r = t.run("folder-run", "--data", w("images"), "--epochs", "4", "--batch-size", "16")
    s = json.load(open(w("folder-run", "summary.json"))) if r.returncode == 0 else {}
    check(r.returncode == 0 and s.get("classes") == ["circle", "square", "stripe"]
          and s.get("test_accuracy", 0) > 0.6,
          f"trains on an image folder (accuracy {s.get('test_accuracy')})")

    if os.path.isdir(FASHION):
        data = [] if FASHION == DEFAULT_FASHION else ["--data", FASHION]
        r = t.run("fashion", *data, "--train-limit", "4000", "--test-limit", "1000", "--epochs", "2")
        s = json.load(open(w("fashion", "summary.json"))) if r.returncode == 0 else {}
        check(r.returncode == 0 and "fashion-mnist" in r.stdout and s.get("test_accuracy", 0) > 0.6,
              f"learns Fashion-MNIST from 4000 images (accuracy {s.get('test_accuracy')})")
    else:
        check(False, f"{FASHION} is missing: install dataset-fashion-mnist "
              "(or name a copy in RESNET_FASHION_MNIST)")

    # Resuming: the same steps as an uninterrupted run.
    common = ["--data", w("mnist"), "--epochs", "2", "--batch-size", "64", "--seed", "7"]
    t.run("full", *common)
    reference = steps(w("full"))
    r = t.run("stopped", *common, "--stop-after", "17")
    check(r.returncode == 0 and "stopped at step 17" in r.stdout, "--stop-after stops and saves")
    r = t.run("stopped", *common, "--resume")
    check(r.returncode == 0 and "resuming" in r.stdout, "--resume continues")
    same_steps(reference, steps(w("stopped")), 18, "--stop-after 17")
    final = json.load(open(w("full", "summary.json")))["test_accuracy"]
    resumed = json.load(open(w("stopped", "summary.json")))["test_accuracy"]
    check(final == resumed, f"the resumed run ends at the same accuracy ({final} == {resumed})")

    # Ctrl-C: a checkpoint, exit status 130, and a resume that matches.
    out = w("interrupted")
    cmd = [args.train, "--out", out, "--threads", "2"] + common
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out, "steps.csv")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and len(open(log).read().splitlines()) > 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    check(proc.returncode == 130 and "interrupted at step" in stdout,
          f"Ctrl-C saves a checkpoint and exits 130 (got {proc.returncode})")
    state = json.load(open(os.path.join(out, "last_state.json")))
    stopped_at = state["step"]
    r = t.run("interrupted", *common, "--resume")
    same_steps(reference, steps(out), stopped_at + 1, f"Ctrl-C at step {stopped_at}")
    r = t.run("interrupted", *common[:-2], "--seed", "8", "--resume", expect=1)
    check(r.returncode == 1 and "cannot resume" in r.stderr and "seed" in r.stderr,
          "resuming with other settings is refused")

    crash_safety(t, w, common, reference)

    # Bad datasets: a clear message naming the path.
    os.makedirs(w("empty"), exist_ok=True)
    damaged_copy(w("mnist"), w("truncated"), "train-images", lambda d: d[: len(d) // 2])
    damaged_copy(w("mnist"), w("badmagic"), "t10k-labels", lambda d: b"\0\0\x09\x99" + d[4:])
    damaged_copy(w("mnist-gz"), w("badgz"), "train-images", lambda d: d[: len(d) // 3])
    damaged_copy(w("cifar"), w("badcifar"), "test_batch", lambda d: d[:-5])
    cases = [
        (["--data", w("nowhere")], 1, "no such folder"),
        (["--data", w("empty")], 1, "cannot tell the format"),
        (["--data", w("truncated"), "--dataset", "mnist"], 1, "the IDX header says [800, 28, 28]"),
        (["--data", w("badmagic")], 1, "IDX rank 153"),
        (["--data", w("badgz")], 1, "truncated gzip stream"),
        (["--data", w("badcifar")], 1, "binary records of 3073 bytes"),
        (["--data", w("images"), "--dataset", "imagenet"], 2, "--dataset: imagenet not in"),
        (["--data", w("mnist"), "--epochs", "0"], 2, "--epochs: Value 0 not in range 1 to"),
        (["--data", w("mnist"), "--seed", "-1"], 2, "--seed: Value -1 not in range"),
        (["--data", w("mnist"), "--bogus"], 2, "not expected: --bogus"),
        (["--device", "cpu", "--data", w("mnist"), "--cuda-graph"], 1,
         "captured as a CUDA graph replays CUDA work, and this one runs on cpu"),
        # Found by fuzz_flags_train_classifier: a number too large for an
        # integer was converted anyway.
        (["--data", w("mnist"), "--stop-after", "5" * 100], 2,
         "not in range 1 to 1000000000000000"),
    ]
    for extra, code, message in cases:
        r = t.run("bad", *extra, expect=code)
        check(r.returncode == code and message in r.stderr
              and (code == 2 or extra[1] in r.stderr),
              f"{' '.join(extra[1:])}: exit {r.returncode}, '{message}'")

    finish("training")


if __name__ == "__main__":
    main()
