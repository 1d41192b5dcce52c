#!/usr/bin/env python3
"""The inference workload of resnet_benchmark, run with OpenVINO.

    python3 openvino_bench.py --arch resnet50 --batch 8 [--threads 2]
                              [--dtype fp32|bf16|int8] [--json]

The ceiling the library's CPU inference is held to: torchvision's network,
exported to ONNX as onnxruntime_bench.py exports it, compiled by OpenVINO's
CPU plugin for latency with the given threads. fp32 and bf16 set the
plugin's inference precision; int8 compiles the QDQ model that
onnxruntime_bench.py --dtype int8 makes (the same recipe: per-channel int8
weights, uint8 activations, the same 32 calibration images), which OpenVINO
runs in int8. bf16 is refused where the CPU cannot run it (OpenVINO lists
BF16 among the CPU's capabilities with AVX512-BF16 or AMX). Same JSON
fields as the others, with "impl": "openvino". Needs the openvino package
(PyPI), besides onnx and, for int8, onnxruntime.
"""

import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnxruntime_bench  # noqa: E402
import torchvision_bench  # noqa: E402


def main():
    sys.argv[0] = "openvino_bench.py"
    a = torchvision_bench.parse_args()
    try:
        import openvino as ov
    except ImportError:
        sys.exit("openvino_bench: no openvino here (pip install openvino into this Python)")
    if a.mode != "infer" or a.dtype not in ("fp32", "bf16", "int8") or a.cuda_graph or \
            a.channels_last or a.device not in ("", "cpu"):
        sys.exit("openvino_bench: runs float32, bfloat16 or int8 inference on the CPU "
                 "only (--mode infer, no --channels-last or --cuda-graph)")
    core = ov.Core()
    if a.dtype == "bf16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"):
        sys.exit("openvino_bench: this CPU has no bfloat16 instructions OpenVINO uses")
    threads, cifar, images, expected, onnx_model = onnxruntime_bench.exported_workload(a)
    if a.dtype == "int8":
        onnx_model = onnxruntime_bench.quantize(onnx_model, a.batch, a.size)

    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "model.onnx")
        with open(path, "wb") as f:
            f.write(onnx_model.getvalue())
        network = core.read_model(path)
    compiled = core.compile_model(network, "CPU", {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "bf16" if a.dtype == "bf16" else "f32",
    })
    request = compiled.create_infer_request()
    feed = {0: images.numpy()}

    def infer():
        request.infer(feed)
        return request.get_output_tensor(0).data

    out = torch.from_numpy(infer().copy())
    error = ((out - expected).norm() / expected.norm()).item()
    # Lower precision on random weights and images: bounds that only catch
    # a broken network.
    if error > {"fp32": 1e-4, "bf16": 0.1, "int8": 0.5}[a.dtype]:
        sys.exit(f"openvino_bench: OpenVINO differs from torchvision by {error:.2g} "
                 "(relative)")

    for _ in range(a.warmup):
        infer()
    ms = []
    for _ in range(a.iters):
        start = time.perf_counter()
        infer()
        ms.append((time.perf_counter() - start) * 1000)
    onnxruntime_bench.report(a, "openvino", "openvino", ov.__version__.split("-")[0],
                             cifar, threads, ms, error)

if __name__ == "__main__":
    main()
