"""Speed and memory of deformation generation (Algorithm 2) beside a straightforward sampler.

Cases (each in a fresh subprocess, so the peak RSS is its own):

* ``2d``: one 256 x 256 deformation at T' = 55 (target <= 2 s on 2 cores);
* ``2d-batch``: 8 deformations of one image at once, time per deformation (target <= 0.5 s);
* ``2d-grid256``: the ``2d`` case with a network on the paper's 256 x 256 grid (random weights),
  for comparison with the packaged model's smaller grid;
* ``3d-64`` and ``3d-128``: one 64^3 / 128^3 deformation at T' = 55 (128^3 target <= 60 s and
  <= 8 GB peak RSS).

"ours" is ``DRDM.generate`` (batched over samples, one network pass per step for the batch,
``torch.inference_mode``). "straightforward" is the plain loop a user would write: one sample
at a time, ``torch.no_grad``, the image re-warped before every network call. Both run the
same maths. Each case also reports where the time goes: one U-Net pass, the network with its
internal recursion (K = 2: two passes, one warp, one compose), and the sampler's own compose
and warp per step.

The 2D cases use the packaged ``default`` model on its own grid (64 x 64; the 256 x 256 input
is resized to it and the field resized back) unless ``--model`` names another; 3D cases use
``default-3d`` when installed, otherwise the default architecture with random weights on the
volume's grid (the time does not depend on the weights); the output says which. 3D cases
are measured on a few steps and extrapolated to T' = 55
(``total = fields + 55 x step + final warp``) unless ``--full-3d``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/generate_benchmark.py [--threads 2] [--quick]
        [--tune-malloc] [--cases 2d 2d-batch 3d-64 3d-128] [--full-3d] [--model DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

LEVEL = 55
TARGETS = {"2d": 2.0, "2d-batch": 0.5, "3d-128": 60.0}
RSS_TARGET_GB = {"3d-128": 8.0}


def _model(ndim: int, size: int, name: str | None, grid: int | None = None):
    """The trained model ``name`` (packaged default when None) on its own grid, or a randomly
    initialised default architecture on a ``grid``^ndim grid (``size`` when None)."""
    from drdm import DRDM
    from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
    from drdm.errors import InputError
    from drdm.nn import NetworkConfig, RecursiveUNet

    candidate = name or ("default" if ndim == 2 else "default-3d")
    if grid is None:
        try:
            model = DRDM.from_pretrained(candidate)
            if model.ndim == ndim:
                return model, f"trained model {candidate!r} (grid {model.image_size})"
        except InputError:
            pass
    grid = size if grid is None else grid
    network = RecursiveUNet(NetworkConfig(ndim=ndim))  # seeded, deterministic random weights
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=ndim))
    return DRDM(network, process, (grid,) * ndim), (
        f"RANDOMLY INITIALISED default architecture on a {grid}^{ndim} grid; timing does not "
        "depend on the weights"
    )


def _time(fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def straightforward(model, image: torch.Tensor, level: int, seed: int) -> torch.Tensor:
    """The plain sampler: one sample, no batching, the loop of Algorithm 2 written out."""
    from drdm.spatial import compose, resize_ddf, warp

    cfg = model.sampler
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        small = torch.nn.functional.interpolate(
            image, size=model.image_size, mode="bilinear" if model.ndim == 2 else "trilinear"
        )
        phi = model.process.sample_fields(model.image_size, level, generator, batch=1).cumulative
        for t in range(level, 0, -1):
            current = warp(small, phi, mode=cfg.image_mode, padding=cfg.image_padding)
            psi = model.network(current, torch.tensor([t]))
            phi = compose(psi, phi, padding=cfg.compose_padding)
        ddf = resize_ddf(phi, image.shape[2:])
        warp(image, ddf, mode=cfg.image_mode, padding=cfg.image_padding)
    return ddf


def _breakdown(model, batch: int) -> dict[str, float]:
    from drdm.spatial import compose, warp

    size = model.image_size
    x = torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(0))
    phi = torch.randn(batch, model.ndim, *size, generator=torch.Generator().manual_seed(1))
    t = torch.full((batch,), 30)
    cfg = model.sampler
    net = model.network
    with torch.inference_mode():
        net.single_pass(x, t)  # warm-up
        return {
            "unet_pass_s": _time(lambda: net.single_pass(x, t), 2),
            "network_s": _time(lambda: net(x, t), 2),
            "compose_s": _time(lambda: compose(phi, phi, padding=cfg.compose_padding), 3),
            "warp_s": _time(
                lambda: warp(x, phi, mode=cfg.image_mode, padding=cfg.image_padding), 3
            ),
        }


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS: large activations
    are otherwise mmapped and page-faulted afresh on every network pass (high system time)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(
        libc.mallopt(m_mmap_threshold, 1 << 30)
        and libc.mallopt(m_trim_threshold, (1 << 31) - 1)
        and libc.mallopt(m_top_pad, 1 << 28)
    )


def worker(case: str, args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(args.threads)
    tuned = tune_malloc() if args.tune_malloc else False
    ndim, size = (2, 256) if case.startswith("2d") else (3, int(case.split("-")[1]))
    grid = 256 if case == "2d-grid256" else None
    model, origin = _model(ndim, size, args.model if ndim == 2 else None, grid)
    batch = 8 if case == "2d-batch" else 1
    image = torch.rand(1, 1, *([size] * ndim), generator=torch.Generator().manual_seed(0))
    result: dict[str, object] = {"case": case, "model": origin, "batch": batch}
    if tuned:
        result["model"] = f"{origin}; glibc malloc tuned (mallopt)"
    result.update(_breakdown(model, batch))
    full = ndim == 2 or args.full_3d
    if args.quick:
        full = False
    if full:
        gen = torch.Generator().manual_seed(0)
        total = _time(lambda: model.generate(image, LEVEL, num_samples=batch, generator=gen))
        result["ours_s"] = total / batch
        result["measured"] = "full run"
    else:  # fields + extrapolated steps + final resize and warp
        from drdm.sampling import recover
        from drdm.spatial import resize_ddf, warp

        gen = torch.Generator().manual_seed(0)
        grid = model.image_size
        fields = _time(lambda: model.process.sample_fields(grid, LEVEL, gen, batch=batch))
        x = torch.rand(batch, 1, *grid, generator=gen)
        phi = model.process.sample_fields(grid, LEVEL, gen, batch=batch).cumulative
        k = args.steps
        step = (
            _time(
                lambda: recover(
                    model.network, model.process, x, k, config=model.sampler, initial_ddf=phi
                )
            )
            / k
        )
        cfg = model.sampler
        final = _time(
            lambda: warp(
                image.expand(batch, *image.shape[1:]),
                resize_ddf(phi, image.shape[2:]),
                mode=cfg.image_mode,
                padding=cfg.image_padding,
            )
        )
        result["ours_s"] = (fields + LEVEL * step + final) / batch
        result["measured"] = (
            f"extrapolated: fields {fields:.2f} s + {LEVEL} x {step:.2f} s/step (timed on {k} "
            f"steps) + final warp {final:.2f} s"
        )
    result["straightforward_s"] = None  # one sample at a time: the "2d" case's figure
    if ndim == 2 and batch == 1 and not args.quick and case == "2d":
        result["straightforward_s"] = _time(lambda: straightforward(model, image, LEVEL, 0))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="2D checkpoint dir (default: 'default')")
    cases = ["2d", "2d-batch", "2d-grid256", "3d-64", "3d-128"]
    parser.add_argument("--cases", nargs="+", default=cases)
    parser.add_argument("--steps", type=int, default=2, help="steps timed for extrapolation")
    parser.add_argument("--full-3d", action="store_true", help="run all 55 steps in 3D")
    parser.add_argument("--quick", action="store_true", help="extrapolate every case")
    parser.add_argument(
        "--tune-malloc", action="store_true", help="keep freed memory in the heap (mallopt)"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}; torch {torch.__version__}; "
        f"threads {args.threads}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
        f"load average before {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--worker", case, "--threads", str(args.threads)]
        cmd += ["--steps", str(args.steps)] + (["--model", args.model] if args.model else [])
        cmd += (["--full-3d"] if args.full_3d else []) + (["--quick"] if args.quick else [])
        cmd += ["--tune-malloc"] if args.tune_malloc else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{case}: failed\n{done.stderr}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{case}: {row['model']}; {row['measured']}", flush=True)
    print()
    print("U-Net pass, network (K=2), compose, warp: one call on the case's whole batch.")
    print("| case | ours, s / deformation | straightforward, s | target | peak RSS GB "
          "| U-Net pass s | network (K=2) s | compose s | warp s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = TARGETS.get(r["case"])
        ok = "" if target is None else (" ✓" if r["ours_s"] <= target else " ✗")
        rss_t = RSS_TARGET_GB.get(r["case"])
        rss_ok = "" if rss_t is None else (" ✓" if r["peak_rss_gb"] <= rss_t else " ✗")
        ref = r.get("straightforward_s")
        print(
            f"| {r['case']} (batch {r['batch']}) | {r['ours_s']:.2f}{ok} "
            f"| {'–' if ref is None else f'{ref:.2f}'} | {target if target else '–'} "
            f"| {r['peak_rss_gb']:.2f}{rss_ok} | {r['unet_pass_s']:.3f} | {r['network_s']:.3f} "
            f"| {r['compose_s']:.4f} | {r['warp_s']:.4f} |"
        )
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
