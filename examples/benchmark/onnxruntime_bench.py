#!/usr/bin/env python3
"""The inference workload of resnet_benchmark, run with ONNX Runtime.

    python3 onnxruntime_bench.py --arch resnet50 --batch 8 [--threads 2] [--json]

The network is torchvision's (built as torchvision_bench.py builds it), in
eval mode, exported to ONNX in memory and run by ONNX Runtime's CPU provider
with all graph optimizations (ONNX Runtime folds batch norms and fuses
convolutions with their activations itself). Takes torchvision_bench.py's
flags; only inference on the CPU applies, in float32 or, with --dtype int8,
quantized by ONNX Runtime's static post-training quantization in the
library's recipe: QDQ format, per-channel symmetric int8 weights, uint8
activations, calibrated on 32 random images as resnet_benchmark --dtype
int8 calibrates (ranges by ONNX Runtime's percentile calibrator, the nearest
to the library's default). Same JSON fields, with "impl": "onnxruntime".
Needs the onnxruntime and onnx packages.
"""

import contextlib
import io
import json
import os
import resource
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchvision_bench  # noqa: E402


def quantize(onnx_model, batch, size):
    """The float model (bytes) in ONNX Runtime's static int8 QDQ form. The
    exported model's batch is fixed: the 32 images come in batches of it."""
    import tempfile
    from onnxruntime import quantization as q

    class Images(q.CalibrationDataReader):
        def __init__(self):
            torch.manual_seed(1)
            images = torch.randn(-(-32 // batch) * batch, 3, size, size)
            self.batches = iter([{"images": b.numpy()} for b in images.split(batch)])

        def get_next(self):
            return next(self.batches, None)

    # The calibrator prints its histogram settings: kept off the JSON line.
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        source = os.path.join(work, "float.onnx")
        prepared = os.path.join(work, "prepared.onnx")
        target = os.path.join(work, "int8.onnx")
        with open(source, "wb") as f:
            f.write(onnx_model.getvalue())
        q.quant_pre_process(source, prepared, skip_symbolic_shape=True)
        q.quantize_static(
            prepared, target, Images(), quant_format=q.QuantFormat.QDQ,
            per_channel=True, weight_type=q.QuantType.QInt8,
            activation_type=q.QuantType.QUInt8,
            calibrate_method=q.CalibrationMethod.Percentile)
        with open(target, "rb") as f:
            return io.BytesIO(f.read())


def report(a, impl, runtime, version, cifar, threads, ms, error):
    """Prints the run as resnet_benchmark does (one JSON object with --json):
    `impl` ran it, `runtime` names its version field, `ms` the timings."""
    ms_median = statistics.median(ms)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "impl": impl, "torch": torch.__version__.split("+")[0], runtime: version,
        "arch": a.arch, "mode": a.mode,
        "batch": a.batch, "size": a.size, "stem": "cifar" if cifar else "imagenet",
        "device": "cpu", "dtype": a.dtype, "channels_last": False, "fuse": a.fuse,
        "cuda_graph": False, "cache_memory": False, "threads": threads,
        "iters": a.iters, "img_per_s": 1000 * a.batch / ms_median,
        "ms_median": ms_median, "ms_min": min(ms), "ms_max": max(ms),
        "peak_memory_mib": peak, "relative_error": error,
    }
    if a.json:
        print(json.dumps(result))
        return
    name = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}.get(impl, impl)
    print(f"{a.arch} infer, batch {a.batch}, {a.size}x{a.size}, cpu, "
          f"{threads} threads, {name} {version}, {a.dtype}\n"
          f"  {result['img_per_s']:.2f} images/s\n"
          f"  {ms_median:.2f} ms per iteration (median of {a.iters}; "
          f"min {min(ms):.2f}, max {max(ms):.2f})\n"
          f"  peak memory {peak:.0f} MiB\n"
          f"  relative difference from torchvision {error:.2g}")


def export(model, images):
    """The model's float32 output for `images`, and the model in ONNX
    (bytes) with a fixed batch, input "images" and output "logits"."""
    onnx_model = io.BytesIO()
    options = {"input_names": ["images"], "output_names": ["logits"]}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:
        options["dynamo"] = False  # the TorchScript exporter: no onnxscript needed
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        expected = model(images)
        torch.onnx.export(model, images, onnx_model, **options)
    return expected, onnx_model


def exported_workload(a):
    """The threads, whether the stem is CIFAR's, the images, torchvision's float32
    output and its ONNX model for the workload of flags `a` (seeded as
    torchvision_bench.py seeds it)."""
    threads = a.threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count()
    torch.set_num_threads(threads)
    cifar = a.stem == "cifar" or (a.stem == "auto" and a.size <= 64)
    classes = a.classes or (10 if cifar else 1000)
    torch.manual_seed(0)
    model = torchvision_bench.build_model(a.arch, classes, cifar).eval()
    images = torch.randn(a.batch, 3, a.size, a.size)
    expected, onnx_model = export(model, images)
    return threads, cifar, images, expected, onnx_model


def main():
    sys.argv[0] = "onnxruntime_bench.py"
    a = torchvision_bench.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit("onnxruntime_bench: no onnxruntime here "
                 "(pip install onnxruntime onnx into this Python)")
    if a.mode != "infer" or a.dtype not in ("fp32", "int8") or a.cuda_graph or \
            a.channels_last or a.device not in ("", "cpu"):
        sys.exit("onnxruntime_bench: runs float32 or int8 inference on the CPU only "
                 "(--mode infer --dtype fp32|int8, no --channels-last or --cuda-graph)")
    threads, cifar, images, expected, onnx_model = exported_workload(a)

    if a.dtype == "int8":
        onnx_model = quantize(onnx_model, a.batch, a.size)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        onnx_model.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}
    out = torch.from_numpy(session.run(None, feed)[0])
    error = ((out - expected).norm() / expected.norm()).item()
    # int8 on random weights and images: a bound that only catches a broken
    # network (the library's tests hold its own int8 to 0.15).
    if error > (0.5 if a.dtype == "int8" else 1e-4):
        sys.exit(f"onnxruntime_bench: ONNX Runtime differs from torchvision by "
                 f"{error:.2g} (relative)")

    for _ in range(a.warmup):
        session.run(None, feed)
    ms = []
    for _ in range(a.iters):
        start = time.perf_counter()
        session.run(None, feed)
        ms.append((time.perf_counter() - start) * 1000)
    report(a, "onnxruntime", "onnxruntime", ort.__version__, cifar, threads, ms, error)

if __name__ == "__main__":
    main()
