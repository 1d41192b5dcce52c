#!/usr/bin/env python3
"""The workload of resnet_benchmark, run with torchvision in Python.

    python3 torchvision_bench.py --arch resnet50 --batch 32 --mode infer [--json]

Same flags and the same JSON fields as resnet_benchmark. The counterparts of
its C++-only speed-ups: --fuse runs torch.jit.optimize_for_inference (batch
norm folded, oneDNN layout on the CPU) and --cuda-graph captures the forward
pass (in training, the whole step) with torch.cuda.CUDAGraph. The CIFAR stem
(3x3 conv, no max pooling) is torchvision's network with conv1 replaced and
maxpool removed.
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time

import torch
import torchvision


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--device", default="")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16", "int8"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--fuse", action="store_true")
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--stem", choices=["auto", "imagenet", "cifar"], default="auto")
    p.add_argument("--classes", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.batch < 1 or a.size < 1 or a.iters < 1 or a.warmup < 0:
        p.error("--batch, --size and --iters must be >= 1, --warmup >= 0")
    if a.mode == "train" and a.fuse:
        p.error("--fuse is for --mode infer")
    if a.mode == "train" and a.cuda_graph and a.dtype == "fp16":
        p.error("--cuda-graph in training runs fp32 or bf16 (fp16 loss scaling "
                "reads the gradients on the host)")
    return a


def build_model(arch, classes, cifar):
    if not hasattr(torchvision.models, arch):
        sys.exit(f"torchvision_bench: torchvision has no '{arch}'")
    model = getattr(torchvision.models, arch)(num_classes=classes)
    if cifar:
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out",
                                      nonlinearity="relu")
        model.maxpool = torch.nn.Identity()
    return model


def quantize_x86(model, size):
    """PyTorch's own post-training static quantization: FX graph mode with the
    x86 engine's default recipe, calibrated on 32 random images as
    resnet_benchmark --dtype int8 calibrates."""
    if "x86" not in torch.backends.quantized.supported_engines:
        sys.exit("torchvision_bench: int8 needs PyTorch's x86 quantized engine "
                 f"(this torch has {torch.backends.quantized.supported_engines})")
    import warnings
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    torch.manual_seed(1)
    images = [torch.randn(1, 3, size, size) for _ in range(32)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("x86"),
                              (images[0],))
        for x in images:
            prepared(x)
        return convert_fx(prepared)


def main():
    a = parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    elif os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    else:
        torch.set_num_threads(os.cpu_count())
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if a.dtype == "int8" and (a.mode != "infer" or device.type != "cpu" or
                              a.cuda_graph or a.channels_last):
        sys.exit("torchvision_bench: int8 is CPU inference (PyTorch's post-training "
                 "quantization), without --channels-last or --cuda-graph")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "int8": torch.float32}[a.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        sys.exit("torchvision_bench: fp16 needs --device cuda; use bf16 on the CPU")
    if a.cuda_graph and device.type != "cuda":
        sys.exit("torchvision_bench: --cuda-graph needs --device cuda")
    train = a.mode == "train"
    # resnet::stem_for_image_size: the CIFAR stem up to 64 pixels.
    cifar = a.stem == "cifar" or (a.stem == "auto" and a.size <= 64)
    classes = a.classes or (10 if cifar else 1000)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format

    torch.manual_seed(0)
    model = build_model(a.arch, classes, cifar).to(device)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(train)
    images = torch.randn(a.batch, 3, a.size, a.size, device=device).contiguous(
        memory_format=memory_format)
    labels = torch.randint(classes, (a.batch,), device=device)

    if train:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                    weight_decay=1e-4)
        if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
            scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        else:
            scaler = torch.cuda.amp.GradScaler(enabled=dtype == torch.float16)
        autocast = dtype != torch.float32

        def loss_of(**autocast_options):
            with (torch.autocast(device.type, dtype=dtype, **autocast_options)
                  if autocast else contextlib.nullcontext()):
                return torch.nn.functional.cross_entropy(model(images), labels)

        def iteration():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        if a.cuda_graph:
            # The whole step captured: warm-up steps on a side stream, then
            # one step captured with gradients cleared (PyTorch's recipe).
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    iteration()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                # Casts cached by autocast would be freed after the capture.
                loss_of(cache_enabled=False).backward()
                optimizer.step()

            def iteration():
                graph.replay()
    else:
        if dtype != torch.float32:
            model = model.to(dtype)
            images = images.to(dtype)
        forward = model
        if a.dtype == "int8":
            forward = quantize_x86(model, a.size)
        elif a.fuse:
            with torch.no_grad():
                forward = torch.jit.optimize_for_inference(torch.jit.script(model))
        if a.cuda_graph:
            static_in = images.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(stream):
                for _ in range(3):
                    forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                static_out = forward(static_in)

            def iteration():
                static_in.copy_(images)
                graph.replay()
                return static_out
        else:
            def iteration():
                with torch.inference_mode():
                    return forward(images)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(a.warmup):
        iteration()
    sync()
    ms = []
    for _ in range(a.iters):
        start = time.perf_counter()
        iteration()
        sync()
        ms.append((time.perf_counter() - start) * 1000)
    ms_median = statistics.median(ms)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "impl": "python", "torch": torch.__version__.split("+")[0], "arch": a.arch,
        "mode": a.mode, "batch": a.batch, "size": a.size,
        "stem": "cifar" if cifar else "imagenet", "device": str(device),
        "dtype": a.dtype, "channels_last": a.channels_last, "fuse": a.fuse,
        "cuda_graph": a.cuda_graph, "cache_memory": False, "threads": torch.get_num_threads(),
        "iters": a.iters, "img_per_s": 1000 * a.batch / ms_median,
        "ms_median": ms_median, "ms_min": min(ms), "ms_max": max(ms),
        "peak_memory_mib": peak,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{a.arch} {a.mode}, batch {a.batch}, {a.size}x{a.size}, {device} "
              f"{a.dtype}{' channels_last' if a.channels_last else ''}"
              f"{' jit-optimized' if a.fuse else ''}"
              f"{' cuda-graph' if a.cuda_graph else ''}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}\n"
              f"  {result['img_per_s']:.2f} images/s\n"
              f"  {ms_median:.2f} ms per iteration (median of {a.iters}; "
              f"min {min(ms):.2f}, max {max(ms):.2f})\n"
              f"  peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
