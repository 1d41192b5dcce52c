#!/usr/bin/env python3
"""End-to-end test of examples/classify.cpp against torchvision.

    check_classify.py --classify build/examples/classify --work DIR

Makes small images and a resnet18 checkpoint with random weights, runs the
classifier, and compares its top-5 classes and probabilities with what
torchvision computes from the same pixels with the same transform (resize the
shorter side to 256 with antialiasing, centre crop 224, normalize). Also
checks that bad images, bad checkpoints and a wrong architecture fail with a
clear message, and --precision bf16/int8 (calibrated, saved and loaded)
against float32. Exit status 0 when everything holds.
"""
import argparse
import os
import shutil
import subprocess
import sys

import torch
import torchvision.transforms.functional as TF
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import export_torchvision as export  # noqa: E402
from checklist import check, finish  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def make_images(work):
    g = torch.Generator().manual_seed(3)
    h, w = 200, 300
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    smooth = torch.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)])
    noise = torch.randint(0, 60, (3, h, w), generator=g)
    rgb = (smooth + noise).clamp(0, 255).to(torch.uint8)
    Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(os.path.join(work, "rgb.png"))
    grey = rgb[0].contiguous()
    Image.fromarray(grey.numpy(), mode="L").save(os.path.join(work, "grey.png"))
    Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(os.path.join(work, "photo.jpg"))
    with open(os.path.join(work, "broken.png"), "w") as f:
        f.write("not an image\n")


def reference(model, path, k=5):
    img = TF.pil_to_tensor(Image.open(path).convert("RGB")).float()
    img = TF.resize(img, 256, antialias=True)
    img = TF.center_crop(img, 224)
    x = TF.normalize(img / 255.0, MEAN, STD).unsqueeze(0)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)[0]
    v, i = p.topk(k)
    return [(int(c), float(q)) for q, c in zip(v, i)]


def parse(stdout):
    """{image: [(class, probability), ...]} from classify's output."""
    out, current = {}, None
    for line in stdout.splitlines():
        if not line.startswith(" "):
            current = line.strip()
            out[current] = []
        else:
            fields = line.split()
            out[current].append((int(fields[2]), float(fields[1])))
    return out


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    print("+ " + " ".join(cmd) + f"  -> {r.returncode}")
    return r


def published_by_name(args):
    """classify --model NAME: timm's weights for resnet18d.ra2_in1k (random
    here) from a stand-in Hub, with their config.json's preprocessing
    (bicubic, crop_pct 0.875) and ImageNet's class names."""
    import json
    import signal
    import tempfile
    import timm
    from timm.models._hub import save_for_hf
    work = os.path.join(args.work, "hub")
    served = os.path.join(work, "served", "timm", "resnet18d.ra2_in1k")
    torch.manual_seed(4)
    model = timm.create_model("resnet18d.ra2_in1k", pretrained=False)
    with torch.no_grad():
        model.fc.weight.mul_(40)
    model.eval()
    save_for_hf(model, served, safe_serialization=True)
    cfg = json.load(open(os.path.join(served, "config.json")))["pretrained_cfg"]
    server = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "standin_servers.py"),
         "--serve", os.path.join(work, "served")], stdout=subprocess.PIPE, text=True)
    try:
        hub_port = server.stdout.readline().split()[1]
        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{hub_port}",
                   HF_HOME=tempfile.mkdtemp(dir=work), no_proxy="127.0.0.1")
        image = os.path.join(args.work, "rgb.png")
        r = subprocess.run([args.classify, "--model", "resnet18d.ra2_in1k", "--device", "cpu",
                            image], capture_output=True, text=True, env=env)
        print("+ classify --model resnet18d.ra2_in1k  -> %d" % r.returncode)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    size = cfg["input_size"][-1]
    img = TF.pil_to_tensor(Image.open(image).convert("RGB")).float()
    img = TF.resize(img, int(size / cfg["crop_pct"]),
                    interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 255)
    x = TF.normalize(TF.center_crop(img, size) / 255.0, cfg["mean"], cfg["std"]).unsqueeze(0)
    with torch.no_grad():
        v, i = torch.softmax(model(x), 1)[0].topk(5)
    want = [(int(c), float(q)) for q, c in zip(v, i)]
    have = parse(r.stdout).get(image, [])
    names = open(os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                              "data", "imagenet_classes.txt")).read().splitlines()
    check(r.returncode == 0 and [c for c, _ in have] == [c for c, _ in want]
          and max(abs(a[1] - b[1]) for a, b in zip(have, want)) <= 1e-3
          and names[want[0][0]] in r.stdout,
          f"classify --model: timm's preprocessing and the class names; top-5 "
          f"{[c for c, _ in have]} == {[c for c, _ in want]} {r.stderr.strip()}")


def precisions(args, ckpt, images, fp32):
    """--precision bf16 and int8 against float32 (fp32: classify's own
    float32 output), --save-int8 and the saved file run again."""
    base = [args.classify, "--weights", ckpt, "--arch", "resnet18", "--device", "cpu"]
    bf16 = run(base + ["--precision", "bf16"] + images)
    have = parse(bf16.stdout)
    check(bf16.returncode == 0 and all(have.get(i, [(None, 0)])[0][0] == fp32[i][0][0]
                                       for i in images),
          "--precision bf16: the top class of float32 for every image "
          f"({bf16.stderr.strip()[-200:]})")
    worst = max(abs(a[1] - b[1]) for i in images for a, b in zip(have.get(i, []), fp32[i]))
    # bfloat16 keeps 8 bits of mantissa: after 18 layers the logits drift
    # by a few percent (the C++ test bounds them), which moves a probability
    # by up to p(1-p) times the logits' drift; 0.055 was seen.
    check(worst < 0.1, f"--precision bf16: probabilities within {worst:.2g} of float32's")

    need = run(base + ["--precision", "int8", images[0]])
    check(need.returncode == 2 and "--calibrate" in need.stderr,
          "--precision int8 without calibration images is a usage error")
    calibration = os.path.join(args.work, "calibration")
    os.makedirs(calibration, exist_ok=True)
    for name in ("rgb.png", "grey.png", "photo.jpg"):
        shutil.copy(os.path.join(args.work, name), calibration)
    # Its folder is not there yet: --save-int8 makes it.
    saved = os.path.join(args.work, "int8", "resnet18.safetensors")
    shutil.rmtree(os.path.dirname(saved), ignore_errors=True)
    int8 = run(base + ["--precision", "int8", "--calibrate", calibration,
                       "--save-int8", saved] + images)
    if torch.__version__.startswith("1."):
        check(int8.returncode == 1 and "onednn::qconv2d_pointwise" in int8.stderr,
              "--precision int8 on LibTorch 1.x says what it lacks: "
              + int8.stderr.strip()[-200:])
        return
    have = parse(int8.stdout)
    check(int8.returncode == 0 and all(have.get(i, [(None, 0)])[0][0] in
                                       [c for c, _ in fp32[i][:2]] for i in images),
          "--precision int8: the top class among float32's first two for every image "
          f"({int8.stderr.strip()[-200:]})")
    check(os.path.isfile(saved) and
          os.path.isfile(os.path.join(os.path.dirname(saved), "config.json")),
          "--save-int8 writes the network and a config.json beside it")
    again = run([args.classify, "--weights", saved] + images)
    check(again.returncode == 0 and parse(again.stdout) == have,
          "the saved int8 network, run by --weights alone, prints the same: "
          + again.stderr.strip()[-200:])
    mixed = run([args.classify, "--weights", saved, "--precision", "bf16", images[0]])
    check(mixed.returncode == 2 and "is an int8 network" in mixed.stderr,
          "an int8 file with another --precision is a usage error")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--classify", required=True)
    p.add_argument("--work", required=True)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    make_images(args.work)

    model = export.build("resnet18", seed=5)
    export.randomize_batch_norm(model, 5)
    with torch.no_grad():
        model.fc.weight.mul_(40)  # a peaked distribution: a stable ranking
    ckpt = os.path.join(args.work, "resnet18.pt")
    export.save(model, ckpt, "dict")
    model.eval()

    images = [os.path.join(args.work, n) for n in ("rgb.png", "grey.png", "photo.jpg")]
    r = run([args.classify, "--weights", ckpt, "--arch", "resnet18", "--topk", "5",
             "--device", "cpu"] + images)
    check(r.returncode == 0, "classify exits 0 on good input: " + r.stderr.strip())
    got = parse(r.stdout)
    print(r.stdout)
    for path in images[:2]:  # lossless: the same pixels on both sides
        want = reference(model, path)
        have = got.get(path, [])
        check([c for c, _ in have] == [c for c, _ in want],
              f"{os.path.basename(path)}: top-5 classes {[c for c, _ in have]} "
              f"== torchvision's {[c for c, _ in want]}")
        diff = max((abs(a[1] - b[1]) for a, b in zip(have, want)), default=1)
        check(diff <= 1e-4, f"{os.path.basename(path)}: probabilities within "
              f"{diff:.2g} of torchvision's (<= 1e-4)")
    jpeg = got.get(images[2], [])
    check(len(jpeg) == 5 and all(0 <= q <= 1 for _, q in jpeg)
          and sum(q for _, q in jpeg) <= 1 + 1e-6,
          "photo.jpg: five classes with probabilities")
    names = open(os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                              "data", "imagenet_classes.txt")).read().splitlines()
    first = r.stdout.splitlines()[1] if r.stdout else ""
    check(names[got[images[0]][0][0]] in first, "class names are printed")

    bad = run([args.classify, "--weights", ckpt, "--arch", "resnet18",
               os.path.join(args.work, "broken.png"), os.path.join(args.work, "none.png")])
    check(bad.returncode == 1 and bad.stderr.count("cannot decode image") == 2,
          "undecodable and missing images are reported: " + bad.stderr.strip())
    wrong = run([args.classify, "--weights", ckpt, "--arch", "resnet34", images[0]])
    check(wrong.returncode == 1 and "cannot load" in wrong.stderr
          and "layer1.2.conv1.weight" in wrong.stderr,
          "a checkpoint of another architecture is refused")
    notckpt = run([args.classify, "--weights", images[0], "--arch", "resnet18", images[0]])
    check(notckpt.returncode == 1 and "not a PyTorch checkpoint" in notckpt.stderr,
          "an image given as checkpoint is refused: " + notckpt.stderr.strip())
    usage = run([args.classify, "--weights", ckpt, images[0]])
    check(usage.returncode == 2 and "--arch is required" in usage.stderr,
          "missing --arch is a usage error")
    zero = run([args.classify, "--weights", ckpt, "--arch", "resnet18", "--topk", "0", images[0]])
    check(zero.returncode == 2 and "--topk: Value 0 not in range 1" in zero.stderr,
          "--topk 0 is a usage error: " + zero.stderr.strip())
    noimage = run([args.classify, "--weights", ckpt, "--arch", "resnet18"])
    check(noimage.returncode == 2 and "IMAGE is required" in noimage.stderr,
          "no image is a usage error")
    precisions(args, ckpt, images, got)
    published_by_name(args)
    helped = run([args.classify, "--help"])
    check(helped.returncode == 0 and "IMAGE" in helped.stdout and "--weights" in helped.stdout,
          "--help lists the flags and exits 0")

    finish("classify")


if __name__ == "__main__":
    main()
