"""Engines measured for one U-Net pass and not adopted, beside the adopted ones.

One pass of the packaged model's network (64 x 64) at batch 1 and 8, timed in turns:
PyTorch with oneDNN convolutions (the default torch engine), ONNX Runtime (the default engine
when installed), ``torch.compile`` with inductor freezing, channels-last memory layout,
bfloat16 autocast, and OpenVINO when it is installed. Each variant's largest difference from
the PyTorch output is printed beside its time (bfloat16 changes the numbers).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/engine_alternatives.py [--threads 1] [--repeats 10]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from _timing import median_ratio, turns  # noqa: E402
from drdm import DRDM  # noqa: E402
from drdm.nn.engine import OnnxRuntimeUNet, export_onnx, onnxruntime_available  # noqa: E402


def openvino_pass(net: torch.nn.Module, x: torch.Tensor, emb: torch.Tensor, threads: int):
    """An OpenVINO fp32 pass compiled for this input's shape (or None if not installed)."""
    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None:
        return None
    import openvino as ov

    core = ov.Core()
    model = core.read_model(export_onnx(net, tuple(x.shape[2:])))
    model.reshape({"image": list(x.shape), "emb": list(emb.shape)})
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    feeds = {"image": x.numpy(), "emb": emb.numpy()}
    return lambda: torch.from_numpy(request.infer(feeds)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = DRDM.from_pretrained("default").network.eval()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.2f}; "
        f"{args.repeats} turns"
    )
    for batch in (1, 8):
        x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        emb = net.embed(torch.full((batch,), 30), batch)
        with torch.inference_mode():
            reference = net.unet_pass(x, emb)
        variants: dict[str, Callable[[], torch.Tensor]] = {
            "torch, oneDNN (default torch engine)": lambda x=x, emb=emb: net.unet_pass(x, emb)
        }
        notes: dict[str, str] = {}
        if onnxruntime_available():
            engine = OnnxRuntimeUNet(net, threads=args.threads)
            variants["onnxruntime (default engine)"] = lambda x=x, emb=emb, e=engine: e.unet_pass(
                x, emb
            )
        if not args.no_compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            compiled = torch.compile(net.unet_pass)
            start = time.perf_counter()
            with torch.no_grad():
                compiled(x, emb)
            notes["torch.compile, freezing"] = f"compiled in {time.perf_counter() - start:.0f} s"
            variants["torch.compile, freezing"] = lambda x=x, emb=emb, c=compiled: c(x, emb)
        last = x.contiguous(memory_format=torch.channels_last)
        variants["channels-last"] = lambda last=last, emb=emb: net.unet_pass(last, emb)

        def bf16(x: torch.Tensor = x, emb: torch.Tensor = emb) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net.unet_pass(x, emb).float()

        variants["bfloat16 autocast"] = bf16
        openvino = openvino_pass(net, x, emb, args.threads)
        if openvino is not None:
            variants["openvino fp32"] = openvino
        with torch.no_grad():
            times = turns(variants, args.repeats)
            outputs = {name: fn() for name, fn in variants.items()}
        base = times["torch, oneDNN (default torch engine)"]
        print(f"\n#### one U-Net pass, 64 x 64, batch {batch}\n")
        print("| variant | median ms | vs torch oneDNN | max difference, voxels | note |")
        print("|---|---|---|---|---|")
        for name, values in times.items():
            ratio = median_ratio(values, base)
            diff = float((outputs[name].float() - reference).abs().max())
            print(
                f"| {name} | {statistics.median(values) * 1e3:.1f} | {ratio:.2f}x | {diff:.1e} "
                f"| {notes.get(name, '')} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
