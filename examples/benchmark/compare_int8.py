#!/usr/bin/env python3
"""The int8 table of compare.sh (--rows int8): for each workload, in
alternating rounds, the library's fused network in float32 and in int8
(resnet_benchmark --dtype int8), ONNX Runtime in float32 and in int8 (QDQ,
per-channel int8 weights, uint8 activations: onnxruntime_bench.py --dtype
int8) and PyTorch's own post-training int8 on the x86 engine
(torchvision_bench.py --dtype int8). Prints median img/s and the ratios of
the library's int8 to the others, headed by the CPU's instruction sets and
OMP_WAIT_POLICY; a column is left empty where its program cannot run here
(no onnxruntime, no x86 engine, LibTorch without the int8 operators).

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

    sides = {
        "ours fp32": lambda w: [a.cxx] + w,
        "ours int8": lambda w: [a.cxx] + w + ["--dtype", "int8"],
        "ORT fp32": lambda w: [a.python, os.path.join(HERE, "onnxruntime_bench.py")] + w,
        "ORT int8": lambda w: [a.python, os.path.join(HERE, "onnxruntime_bench.py")] + w
        + ["--dtype", "int8"],
        "PyTorch int8": lambda w: [a.python, os.path.join(HERE, "torchvision_bench.py")]
        + [f for f in w if f != "--fuse"] + ["--dtype", "int8"],
    }
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
    ort = next((r for r in records if r["impl"] == "onnxruntime"), {})
    print(f"LibTorch {ours['torch']} (C++), ONNX Runtime {ort.get('onnxruntime', '-')}, "
          f"{a.threads} threads, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, CPU: {features}; "
          f"median img/s of {a.rounds} alternating rounds\n")
    names = list(sides)
    print("| workload | " + " | ".join(names)
          + " | int8 / ORT int8 | int8 / ORT fp32 | int8 / ours fp32 |")
    print("|---|" + "---:|" * (len(names) + 3))
    for w, by in results.items():
        med = {s: statistics.median(v) for s, v in by.items()}
        cells = [f"{med[s]:.1f}" if s in med else "" for s in names]

        def ratio(other):
            if "ours int8" in med and other in med:
                return f"{med['ours int8'] / med[other]:.2f}"
            return ""

        flags = shlex.split(w)
        what = (f"{flags[flags.index('--arch') + 1]} bs{flags[flags.index('--batch') + 1]}"
                if "--arch" in flags and "--batch" in flags else w)
        print(f"| {what} | " + " | ".join(cells) + f" | {ratio('ORT int8')} | "
              f"{ratio('ORT fp32')} | {ratio('ours fp32')} |")
    for side, said in missing.items():
        print(f"\n{side}: not run here ({said})")


if __name__ == "__main__":
    main()
