#!/usr/bin/env python3
"""Writes the weight files users have, all from one torchvision model, for the
C++ checkpoint tests (a CTest fixture):

    make_checkpoint_layouts.py --out DIR

DIR/resnet50/: one random torchvision resnet50 (random batch-norm statistics)
as torchvision publishes weights (`torch.save(model.state_dict())`), in the
legacy format, with pickle protocol 4, as torchvision's reference training
script checkpoints it, and as safetensors; io.pt holds an input and the
eval-mode output.
DIR/layouts/: a small resnet18's state dict under the names training scripts
use, EMA copies, a whole pickled model, and files the navigation must refuse.
"""
import argparse
import copy
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import export_torchvision as export  # noqa: E402


def training_args():
    """What torchvision's references/classification/train.py keeps in its
    checkpoints under "args"."""
    return argparse.Namespace(model="resnet50", lr=0.5, epochs=600,
                              batch_size=128, weight_decay=2e-05,
                              label_smoothing=0.1, data_path="/data/imagenet")


def reference_checkpoint(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=2e-5)
    model.train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=600)
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "lr_scheduler": sched.state_dict(), "epoch": 599,
            "args": training_args()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    a = p.parse_args()

    out = os.path.join(a.out, "resnet50")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    export.randomize_batch_norm(model)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    torch.save({"input": x, "eval_output": y}, os.path.join(out, "io.pt"))
    state = model.state_dict()
    torch.save(state, os.path.join(out, "official.pth"))
    torch.save(state, os.path.join(out, "legacy.pth"),
               _use_new_zipfile_serialization=False)
    torch.save(state, os.path.join(out, "protocol4.pth"), pickle_protocol=4)
    import safetensors.torch
    safetensors.torch.save_file(state, os.path.join(out, "model.safetensors"))
    # Last: training changes the weights.
    torch.save(reference_checkpoint(model), os.path.join(out, "checkpoint.pth"))

    out = os.path.join(a.out, "layouts")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    small = torchvision.models.resnet18(num_classes=10)
    export.randomize_batch_norm(small)
    torch.manual_seed(2)
    ema = torchvision.models.resnet18(num_classes=10)
    torch.save(small.state_dict(), os.path.join(out, "weights.pth"))
    torch.save(ema.state_dict(), os.path.join(out, "ema_weights.pth"))
    sd = small.state_dict()
    layouts = {
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model_state_dict": {"model_state_dict": sd, "optimizer_state_dict": {}},
        "net_dataparallel": {"net": torch.nn.DataParallel(copy.deepcopy(small)).cpu().state_dict(),
                             "acc": 93.1, "epoch": 7},
        "model_and_ema": {"model": sd, "model_ema": ema.state_dict(), "epoch": 9},
        "nested": {"checkpoint": {"weights_of_run": sd}, "step": 100},
        "unknown_name": {"backbone_weights": sd, "note": "one dict of tensors"},
        "two_unknown": {"first": sd, "second": ema.state_dict()},
        "no_tensors": {"epoch": 1, "args": training_args(), "history": [0.5, 0.4]},
    }
    for name, obj in layouts.items():
        torch.save(obj, os.path.join(out, name + ".pth"))
    torch.save(small, os.path.join(out, "whole_model.pth"))
    print(f"wrote the checkpoint layouts to {a.out}")


if __name__ == "__main__":
    main()
