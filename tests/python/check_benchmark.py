#!/usr/bin/env python3
"""End-to-end test of examples/benchmark: resnet_benchmark, its Python
counterpart torchvision_bench.py, onnxruntime_bench.py and compare.sh.

    check_benchmark.py --benchmark build/examples/resnet_benchmark --python python3

Runs small workloads of every mode, checks the JSON fields and that both
programs describe the same workload, that bad flags fail with a clear message,
and that compare.sh prints a table with a ratio per row. Exit status 0 when
everything holds.
"""
import argparse
import json
import os
import re
import subprocess
import sys

from checklist import check, finish

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.join(HERE, "..", "..", "examples", "benchmark")
FIELDS = ["impl", "torch", "arch", "mode", "batch", "size", "device", "dtype",
          "channels_last", "fuse", "cuda_graph", "cache_memory", "threads", "iters", "img_per_s",
          "ms_median", "ms_min", "ms_max", "peak_memory_mib"]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def measure(cmd, flags):
    r = run(cmd + flags + ["--json"])
    check(r.returncode == 0, f"{' '.join(flags)}: exit 0 ({r.stderr.strip()[-300:]})")
    if r.returncode != 0:
        return None
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    check(len(lines) == 1, f"{' '.join(flags)}: one JSON object")
    out = json.loads(lines[0])
    missing = [f for f in FIELDS if f not in out]
    check(not missing, f"{' '.join(flags)}: all fields present {missing}")
    check(out["img_per_s"] > 0 and out["ms_min"] <= out["ms_median"] <= out["ms_max"],
          f"{' '.join(flags)}: positive speed, min <= median <= max")
    check(abs(out["img_per_s"] - 1000 * out["batch"] / out["ms_median"]) < 1e-2 * out["img_per_s"],
          f"{' '.join(flags)}: img/s = batch / median time")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--benchmark", required=True)
    p.add_argument("--python", default=sys.executable)
    a = p.parse_args()
    cxx = [a.benchmark]
    py = [a.python, os.path.join(BENCH_DIR, "torchvision_bench.py")]
    small = ["--size", "64", "--batch", "2", "--warmup", "1", "--iters", "2",
             "--device", "cpu", "--threads", "1"]

    workloads = [
        ["--arch", "resnet18"],
        ["--arch", "resnet18", "--fuse"],
        ["--arch", "resnet50", "--channels-last"],
        ["--arch", "resnet18", "--dtype", "bf16"],
        ["--arch", "resnet18", "--mode", "train", "--stem", "cifar", "--size", "32"],
        ["--arch", "resnet18", "--mode", "train", "--dtype", "bf16"],
    ]
    cached = measure(cxx, small + ["--arch", "resnet18", "--cache-memory"])
    check(cached is not None and cached["cache_memory"] is True,
          "--cache-memory runs and is reported")
    for w in workloads:
        flags = small + w
        c = measure(cxx, flags)
        p_ = measure(py, flags)
        if c and p_:
            same = all(c[k] == p_[k] for k in ["arch", "mode", "batch", "size", "stem",
                                                 "device", "dtype", "channels_last",
                                                 "fuse", "threads", "iters"])
            check(same and c["impl"] == "c++" and p_["impl"] == "python",
                  f"{' '.join(w)}: both describe the same workload")

    # --fuse reports the CPU kernels it ran, and --cpu-kernels picks them.
    for kernels in ["onednn-layout", "aten"]:
        out = measure(cxx, small + ["--arch", "resnet18", "--fuse", "--cpu-kernels", kernels])
        check(out is not None and out.get("cpu_kernels") == kernels,
              f"--cpu-kernels {kernels} runs and is reported")
    fused = measure(cxx, small + ["--arch", "resnet18", "--fuse"])
    check(fused is not None and fused.get("cpu_kernels") in ("onednn-fused", "onednn-layout"),
          "--fuse on the CPU runs oneDNN by default")
    check(fused is not None and fused.get("gpu_kernels") == "",
          "no GPU kernels are reported for a CPU run")
    # The CPU's instruction sets, as the kernel reports them.
    flags = open("/proc/cpuinfo").read().split("flags", 1)[-1].split("\n", 1)[0].split()
    named = (fused or {}).get("cpu_features", "").split()
    check(named and all(f in flags for f in named if f != "none")
          and (("avx2" in named) == ("avx2" in flags)),
          f"cpu_features names this CPU's instruction sets: {named}")

    # int8: oneDNN's quantized convolutions where LibTorch has them (2.x).
    int8 = small + ["--arch", "resnet18", "--fuse", "--dtype", "int8"]
    int8_ok = fused is not None and not fused["torch"].startswith("1.")
    if int8_ok:
        out = measure(cxx, int8)
        check(out is not None and out["cpu_kernels"] == "onednn-int8"
              and out["dtype"] == "int8", "--dtype int8 runs oneDNN's int8 kernels")
    else:
        r = run(cxx + int8)
        check(r.returncode == 1 and "onednn::qconv2d_pointwise" in r.stderr,
              f"--dtype int8 on LibTorch 1.x says what it lacks: {r.stderr.strip()[-200:]}")

    # ONNX Runtime, where this Python has it: the same workload, the same
    # fields, and outputs equal to torchvision's.
    has_ort = run([a.python, "-c", "import onnxruntime, onnx"]).returncode == 0
    if has_ort:
        o = measure([a.python, os.path.join(BENCH_DIR, "onnxruntime_bench.py")],
                    small + ["--arch", "resnet18", "--fuse"])
        check(o is not None and o["impl"] == "onnxruntime" and o["relative_error"] < 1e-4
              and o["batch"] == 2 and o["threads"] == 1,
              "onnxruntime_bench.py: the workload, matching torchvision")
        r = run([a.python, os.path.join(BENCH_DIR, "onnxruntime_bench.py")] + small
                + ["--arch", "resnet18", "--mode", "train"])
        check(r.returncode != 0 and "float32 or int8 inference on the CPU only" in r.stderr,
              "onnxruntime_bench.py refuses training")
    else:
        print(f"note: no onnxruntime in {a.python}; its rows are not checked")

    text = run(cxx + small + ["--arch", "resnet18"])
    check(text.returncode == 0 and "images/s" in text.stdout and "ms per iteration" in text.stdout,
          "text report names images/s and ms per iteration")

    bad = [
        (["--arch", "resnet7"], 1, "unknown architecture"),
        (["--batch", "x"], 2, "--batch: Value x not in range 1"),
        (["--threads", "5000"], 2, "--threads: Value 5000 not in range 0 to 4096"),
        (["--mode", "eval"], 2, "--mode: eval not in {infer,train}"),
        (["--dtype", "fp8"], 2, "--dtype: fp8 not in {fp32,bf16,fp16,int8}"),
        (["--dtype", "int8"], 2, "--dtype int8 is for --fuse --mode infer"),
        (["--mode", "train", "--fuse"], 2, "--fuse is for --mode infer"),
        (["--mode", "train", "--cuda-graph", "--dtype", "fp16"], 2,
         "--cuda-graph in training runs fp32 or bf16"),
        (["--mode", "train", "--cuda-graph"], 1, "--cuda-graph needs --device cuda"),
        (["--cuda-graph"], 1, "--cuda-graph needs --device cuda"),
        (["--dtype", "fp16"], 1, "fp16 needs --device cuda"),
        (["--frobnicate"], 2, "not expected: --frobnicate"),
        (["--fuse", "--cpu-kernels", "mlas"], 2, "--cpu-kernels: mlas not in {onednn-fused,"),
        (["--cpu-kernels", "aten"], 2, "--cpu-kernels requires --fuse"),
        (["--fuse", "--gpu-kernels", "cutlass"], 2, "--gpu-kernels: cutlass not in {cudnn-fused,aten}"),
        (["--gpu-kernels", "aten"], 2, "--gpu-kernels requires --fuse"),
    ]
    for flags, code, message in bad:
        r = run(cxx + small + flags)
        check(r.returncode == code and message in r.stderr,
              f"{' '.join(flags)}: exit {code} saying '{message}' (got {r.returncode}: "
              f"{r.stderr.strip().splitlines()[0] if r.stderr.strip() else ''})")

    usage = run(cxx + ["--help"])
    check(usage.returncode == 0 and all(f in usage.stdout for f in
                                        ["--batch", "--cpu-kernels", "--json"]),
          "--help lists the flags and exits 0")

    r = run(["bash", os.path.join(BENCH_DIR, "compare.sh"), "--cxx", a.benchmark,
             "--python", a.python, "--rows", "quick", "--rounds", "1", "--threads", "1"])
    rows = [l for l in r.stdout.splitlines() if l.startswith("| resnet18")]
    check(r.returncode == 0 and len(rows) == 2, f"compare.sh: two table rows ({r.stderr[-300:]})")
    check(all(len(re.findall(r"\| \d+\.\d\d ", l)) == 2 for l in rows if "fused" not in l),
          "compare.sh: two ratios per row (as is, with the memory cache)")
    fused_rows = [l for l in rows if "fused" in l]
    ratios = 3 if has_ort else 2
    check(len(fused_rows) == 1 and len(re.findall(r"\| \d+\.\d\d ", fused_rows[0])) == ratios,
          f"compare.sh: {ratios} ratios in the fused row"
          + (" (ONNX Runtime too)" if has_ort else ""))

    # The int8 table: our int8 where LibTorch has the operators, ONNX
    # Runtime's QDQ int8 where onnxruntime is installed; the CPU's
    # instruction sets in its heading.
    r = run(["bash", os.path.join(BENCH_DIR, "compare.sh"), "--cxx", a.benchmark,
             "--python", a.python, "--rows", "int8-quick", "--rounds", "1",
             "--threads", "1"])
    rows = [l for l in r.stdout.splitlines() if l.startswith("| resnet18 bs2 |")]
    check(r.returncode == 0 and len(rows) == 1 and "CPU: " in r.stdout,
          f"compare.sh --rows int8: one row under the CPU's features ({r.stderr[-300:]})")
    heads = [l for l in r.stdout.splitlines() if l.startswith("| workload |")]
    if rows and heads:
        # The cells by their column's name.
        cell = dict(zip([c.strip() for c in heads[0].strip("|").split("|")],
                        [c.strip() for c in rows[0].strip("|").split("|")]))
        number = re.compile(r"^\d+\.\d$")
        check(number.match(cell.get("ours fp32", "")) is not None
              and number.match(cell.get("ours bf16", "")) is not None,
              f"compare.sh --rows int8: ours fp32 and bf16 measured: {cell}")
        check(bool(number.match(cell.get("ours int8", ""))) == int8_ok,
              "compare.sh --rows int8: ours int8 measured exactly where the operators are")
        check(bool(number.match(cell.get("ORT fp32", ""))) == has_ort
              and bool(number.match(cell.get("ORT int8", ""))) == has_ort,
              "compare.sh --rows int8: ONNX Runtime fp32 and int8 where it is installed")
        has_openvino = run([a.python, "-c", "import openvino"]).returncode == 0
        check(bool(number.match(cell.get("OV fp32", ""))) == has_openvino,
              "compare.sh --rows int8: OpenVINO fp32 where it is installed")
        if int8_ok and has_ort:
            check(re.match(r"^\d+\.\d\d$", cell.get("int8 / ORT int8", "")) is not None,
                  "compare.sh --rows int8: the ratio to ONNX Runtime's int8")

    finish("benchmark")


if __name__ == "__main__":
    main()
