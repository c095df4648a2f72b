"""Speed of deformation generation (Algorithm 2): today's default beside the previous one.

Every case times the package's current default path ("new": the model's default sampler
stride, convolutions through oneDNN, ONNX Runtime when installed) beside the path the package
had before these options existed ("previous": every timestep, K = 2, PyTorch's own
convolution dispatch, ``nn.InstanceNorm``), and beside single options, in the SAME process.
Variants are timed in turns (one run of each, then again, ``--repeats`` times) so that load
changes affect all of them alike; the table gives medians and the median of the per-turn
ratios to "previous".

Cases:

* ``pass``: one U-Net pass on the 64 x 64 grid of the packaged model, batch 1 and batch 8;
* ``2d``: one 256 x 256 deformation at T' = 55 (target <= 0.3 s);
* ``2d-batch``: 8 deformations of one 256 x 256 image in one call, time per deformation
  (target <= 0.15 s);
* ``stack``: one 216 x 256 x 10 short-axis stack (1.56 x 1.56 x 10 mm) deformed slice by slice
  by the 2D model (``drdm.pipelines.deform_volume``, DRDM alone), per volume (target <= 1 s);
* ``3d``: one 128^3 volume with a 3D model on a coarse grid (``--grid``, random weights: the
  time does not depend on them; the previous path is extrapolated from ``--steps`` steps),
  run in a subprocess for its peak memory (targets <= 30 s and <= 4 GB).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/generate_benchmark.py [--threads 1]
        [--cases pass 2d 2d-batch stack 3d] [--repeats 5] [--grid 32]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from _previous import previous_network  # noqa: E402
from _timing import median_ratio, turns  # noqa: E402
from drdm import DRDM  # noqa: E402
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig  # noqa: E402
from drdm.nn import NetworkConfig, RecursiveUNet  # noqa: E402
from drdm.nn.engine import onnxruntime_available  # noqa: E402
from drdm.sampling import SamplerConfig  # noqa: E402

LEVEL = 55


def previous_model(model: DRDM) -> DRDM:
    """``model`` as generated before: previous network, every timestep, PyTorch engine."""
    sampler = SamplerConfig(
        compose_padding=model.sampler.compose_padding,
        image_mode=model.sampler.image_mode,
        image_padding=model.sampler.image_padding,
        stride=1,  # every timestep, as Algorithm 2 reads
        skip="compose",
    )
    return DRDM(
        previous_network(model.network).eval(),
        model.process,
        model.image_size,
        sampler=sampler,
        engine="torch",
    )


def report(title: str, times: dict[str, list[float]], unit: float = 1.0, note: str = "") -> None:
    base = times["previous"]
    print(f"\n#### {title}{note}\n")
    print("| variant | median s | vs previous (median of per-turn ratios) |")
    print("|---|---|---|")
    for name, values in times.items():
        ratio = median_ratio(values, base)
        print(f"| {name} | {statistics.median(values) / unit:.3f} | {ratio:.2f}x |")


def default_2d() -> DRDM:
    return DRDM.from_pretrained("default")


def variants_2d(model: DRDM, image: torch.Tensor, samples: int) -> dict[str, Callable[[], object]]:
    prev = previous_model(model)
    stride = model.sampler.stride

    def run(m: DRDM, **kwargs: object) -> Callable[[], object]:
        return lambda: m.generate(
            image, LEVEL, num_samples=samples, generator=torch.Generator().manual_seed(0), **kwargs
        )

    out = {
        "previous": run(prev),
        "new default": run(model),
        "torch engine, stride 1": run(model, engine="torch", stride=1),
        f"torch engine, stride {stride}": run(model, engine="torch"),
    }
    if onnxruntime_available():
        out["onnxruntime, stride 1"] = run(model, engine="onnxruntime", stride=1)
    return out


def case_pass(args: argparse.Namespace) -> None:
    from drdm.nn.engine import OnnxRuntimeUNet

    model = default_2d()
    net = model.network
    prev = previous_network(net).eval()
    for batch in (1, 8):
        x = torch.rand(batch, 1, *model.image_size, generator=torch.Generator().manual_seed(0))
        emb = net.embed(torch.full((batch,), 30), batch)
        variants: dict[str, Callable[[], object]] = {
            "previous": lambda x=x, emb=emb: prev.unet_pass(x, emb),
            "torch, oneDNN": lambda x=x, emb=emb: net.unet_pass(x, emb),
        }
        if onnxruntime_available():
            engine = OnnxRuntimeUNet(net)
            variants["onnxruntime"] = lambda x=x, emb=emb, e=engine: e.unet_pass(x, emb)
        with torch.inference_mode():
            times = turns(variants, args.repeats * 4)
        report(f"one U-Net pass, 64 x 64, batch {batch}", times)


def case_2d(args: argparse.Namespace, samples: int) -> None:
    model = default_2d()
    image = torch.rand(256, 256, generator=torch.Generator().manual_seed(0))
    times = turns(variants_2d(model, image, samples), args.repeats)
    if samples == 1:
        title = f"one 256 x 256 deformation, T' = {LEVEL}"
    else:
        title = f"{samples} deformations of a 256 x 256 image in one call, per deformation"
    report(title, times, unit=samples, note=f" (new default: stride {model.sampler.stride})")


def case_stack(args: argparse.Namespace) -> None:
    from drdm.pipelines import DRDMSampler, deform_volume

    model = default_2d()
    prev = previous_model(model)
    volume = torch.rand(216, 256, 10, generator=torch.Generator().manual_seed(0)).numpy()
    label = (volume > 0.7).astype("uint8")
    spacing = (1.5625, 1.5625, 10.0)

    def run(m: DRDM) -> Callable[[], object]:
        sampler = DRDMSampler(m, LEVEL)
        return lambda: deform_volume(
            sampler, volume, [label], torch.Generator().manual_seed(0), spacing=spacing
        )

    times = turns({"previous": run(prev), "new default": run(model)}, args.repeats)
    report("216 x 256 x 10 stack, slice-wise 2D model, per deformed volume", times)


def worker_3d(args: argparse.Namespace) -> dict[str, object]:
    """One 128^3 deformation with a random-weight 3D model on a ``grid``^3 grid."""
    grid = args.grid
    network = RecursiveUNet(NetworkConfig(ndim=3))
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=3))
    stride = args.stride if args.stride is not None else SamplerConfig().stride
    model = DRDM(network, process, (grid,) * 3, sampler=SamplerConfig(stride=stride))
    image = torch.rand(128, 128, 128, generator=torch.Generator().manual_seed(0))
    result: dict[str, object] = {"grid": grid, "stride": stride}
    if args.worker == "3d-previous":
        from drdm.sampling import recover

        prev = previous_model(model)
        small = torch.rand(1, 1, grid, grid, grid)
        phi = process.sample_fields((grid,) * 3, LEVEL, torch.Generator().manual_seed(0)).cumulative
        start = time.perf_counter()
        recover(prev.network, process, small, args.steps, config=prev.sampler, initial_ddf=phi)
        per_step = (time.perf_counter() - start) / args.steps
        start = time.perf_counter()
        prev.generate(image, 1, generator=torch.Generator().manual_seed(0))
        one_step_total = time.perf_counter() - start
        result["seconds"] = one_step_total + (LEVEL - 1) * per_step
        result["how"] = f"extrapolated from {args.steps} steps ({per_step:.2f} s per step)"
    else:
        engine = "onnxruntime" if args.worker == "3d-onnxruntime" else "torch"
        model.generate(image, 2, generator=torch.Generator().manual_seed(0), engine=engine)
        start = time.perf_counter()
        model.generate(image, LEVEL, generator=torch.Generator().manual_seed(1), engine=engine)
        result["seconds"] = time.perf_counter() - start
        result["how"] = f"full run, engine {engine}"
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def case_3d(args: argparse.Namespace) -> None:
    workers = ["3d-previous", "3d-torch"] + (["3d-onnxruntime"] if onnxruntime_available() else [])
    print(f"\n#### one 128^3 deformation, T' = {LEVEL}, 3D model on a {args.grid}^3 grid\n")
    print("| variant | s | peak RSS GB | how |")
    print("|---|---|---|---|")
    for name in workers:
        cmd = [sys.executable, __file__, "--worker", name, "--grid", str(args.grid)]
        cmd += ["--threads", str(args.threads), "--steps", str(args.steps)]
        cmd += [] if args.stride is None else ["--stride", str(args.stride)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {name} | failed | | {done.stderr.strip().splitlines()[-1]} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| {name} (stride {row['stride'] if name != '3d-previous' else 1}) "
            f"| {row['seconds']:.1f} | {row['peak_rss_gb']:.2f} | {row['how']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="+", default=["pass", "2d", "2d-batch", "stack", "3d"])
    parser.add_argument("--repeats", type=int, default=5, help="timed turns per case")
    parser.add_argument("--grid", type=int, default=32, help="3D model grid (per axis)")
    parser.add_argument("--stride", type=int, default=None, help="3D sampler stride")
    parser.add_argument("--steps", type=int, default=2, help="3D previous: steps timed")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker_3d(args)))
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}; torch {torch.__version__}; "
        f"{args.threads} thread(s); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
        f"onnxruntime {'installed' if onnxruntime_available() else 'not installed'}; "
        f"load average before {os.getloadavg()[0]:.2f}; {args.repeats} turns per case"
    )
    for case in args.cases:
        if case == "pass":
            case_pass(args)
        elif case == "2d":
            case_2d(args, 1)
        elif case == "2d-batch":
            case_2d(args, 8)
        elif case == "stack":
            case_stack(args)
        elif case == "3d":
            case_3d(args)
        else:
            raise SystemExit(f"unknown case {case!r}")
        sys.stdout.flush()
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
