#!/usr/bin/env python3
"""The lower-precision table of compare.sh (--rows int8): for each
workload, in alternating rounds, the library's fused network in float32,
bfloat16 and int8 (resnet_benchmark --dtype), ONNX Runtime in float32 and
in int8 (QDQ, per-channel int8 weights, uint8 activations:
onnxruntime_bench.py --dtype int8), PyTorch's own post-training int8 on the
x86 engine (torchvision_bench.py --dtype int8) and OpenVINO in float32,
bfloat16 and int8 (openvino_bench.py; its int8 is ONNX Runtime's QDQ
model) as the ceiling. Prints median img/s and the ratios the targets are
stated in, headed by the CPU's instruction sets and OMP_WAIT_POLICY; a
column is left empty where its program cannot run here (no onnxruntime or
openvino, no x86 engine, no bfloat16 in OpenVINO on this CPU, LibTorch
without the int8 operators).

    compare_int8.py --cxx resnet_benchmark --python PY [--rounds 3]
                    [--threads 2] [--out FILE] -- "WORKLOAD FLAGS" ...
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    """The JSON line a benchmark printed, or its complaint."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not lines:
        said = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return None, said
    return json.loads(lines[-1]), None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cxx", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("workloads", nargs="+")
    a = p.parse_args()

    def ort(w):
        return [a.python, os.path.join(HERE, "onnxruntime_bench.py")] + w

    def openvino(w):
        return [a.python, os.path.join(HERE, "openvino_bench.py")] + w

    sides = {
        "ours fp32": lambda w: [a.cxx] + w,
        "ours bf16": lambda w: [a.cxx] + w + ["--dtype", "bf16"],
        "ours int8": lambda w: [a.cxx] + w + ["--dtype", "int8"],
        "ORT fp32": ort,
        "ORT int8": lambda w: ort(w) + ["--dtype", "int8"],
        "PyTorch int8": lambda w: [a.python, os.path.join(HERE, "torchvision_bench.py")]
        + [f for f in w if f != "--fuse"] + ["--dtype", "int8"],
        "OV fp32": openvino,
        "OV bf16": lambda w: openvino(w) + ["--dtype", "bf16"],
        "OV int8": lambda w: openvino(w) + ["--dtype", "int8"],
    }
    # The ratios the targets are stated in: (numerator, denominator).
    ratios = [("ours fp32", "ORT fp32"), ("ours bf16", "OV bf16"),
              ("ours int8", "ORT int8"), ("ours int8", "OV int8"),
              ("ours int8", "ours fp32")]
    results = {}
    missing = {}
    records = []
    for round_ in range(1, a.rounds + 1):
        for w in a.workloads:
            flags = shlex.split(w) + ["--device", "cpu", "--threads", str(a.threads),
                                      "--json"]
            for side, command in sides.items():
                if side in missing:
                    continue
                out, said = run(command(flags))
                if out is None:
                    # A program that cannot run here is left out from then on.
                    missing[side] = said
                    print(f"compare_int8: {side} left out: {said}", file=sys.stderr)
                    continue
                out["side"] = side
                records.append(out)
                results.setdefault(w, {}).setdefault(side, []).append(out["img_per_s"])
        print(f"round {round_} of {a.rounds} done", file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    ours = next((r for r in records if r["impl"] == "c++"), None)
    if ours is None:
        sys.exit("compare_int8: resnet_benchmark did not run: "
                 + missing.get("ours fp32", "?"))
    features = ours.get("cpu_features", "?")
    runtimes = {}
    for r in records:
        for name in ("onnxruntime", "openvino"):
            if r.get(name):
                runtimes.setdefault(name, r[name])
    print(f"LibTorch {ours['torch']} (C++), ONNX Runtime "
          f"{runtimes.get('onnxruntime') or '-'}, OpenVINO {runtimes.get('openvino') or '-'}, "
          f"{a.threads} threads, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, CPU: {features}; "
          f"median img/s of {a.rounds} alternating rounds\n")
    names = list(sides)
    heads = [f"{top.replace('ours ', '')} / {bottom}" for top, bottom in ratios]
    print("| workload | " + " | ".join(names + heads) + " |")
    print("|---|" + "---:|" * (len(names) + len(heads)))
    for w, by in results.items():
        med = {s: statistics.median(v) for s, v in by.items()}
        cells = [f"{med[s]:.1f}" if s in med else "" for s in names]
        cells += [f"{med[top] / med[bottom]:.2f}" if top in med and bottom in med else ""
                  for top, bottom in ratios]
        flags = shlex.split(w)
        what = (f"{flags[flags.index('--arch') + 1]} bs{flags[flags.index('--batch') + 1]}"
                if "--arch" in flags and "--batch" in flags else w)
        print(f"| {what} | " + " | ".join(cells) + " |")
    for side, said in missing.items():
        print(f"\n{side}: not run here ({said})")


if __name__ == "__main__":
    main()
