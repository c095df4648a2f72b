"""Time one DRDM training step (Algorithm 1) and show where the time goes.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_step_benchmark.py --size 128 --batch 8 \
        --threads 2 --runs 5 [--profile]

A step is: draw + augment a batch, forward process (t, psi_t, phi_{t:1}, I_t), network
forward (Eq. 12, K recursions), loss (Eq. 14), backward, Adam. Each phase is timed
separately (wall clock, after ``--warmup`` untimed steps); ``--profile`` adds a
torch.profiler table of the most expensive operators (forward and backward). The issue's
target is <= 1 s per step at batch 8, 128 x 128, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.losses import drdm_loss
from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.training import AugmentConfig, augment_batch

PHASES = ("data+augment", "forward process", "network forward", "loss", "backward", "adam")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--ndim", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--recursions", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = [args.size] * args.ndim
    net = RecursiveUNet(NetworkConfig(ndim=args.ndim, recursions=args.recursions)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=args.ndim))
    pool = torch.rand(32, 1, *size, generator=torch.Generator().manual_seed(0)).to(device)
    data_gen = torch.Generator().manual_seed(1)
    diff_gen = torch.Generator().manual_seed(2)
    augment = AugmentConfig()

    def step(times: dict[str, list[float]] | None) -> None:
        marks = [time.perf_counter()]

        def mark() -> None:
            _sync(device)
            marks.append(time.perf_counter())

        index = torch.randint(0, len(pool), (args.batch,), generator=data_gen)
        images = augment_batch(pool[index.to(device)], augment, data_gen)
        mark()
        t = torch.randint(1, 81, (args.batch,), generator=diff_gen).to(device)
        fwd = process.sample(images, t, generator=diff_gen, perturb=True)
        mark()
        psi_hat = net(fwd.images, t)
        mark()
        loss = drdm_loss(fwd.step, psi_hat)
        mark()
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        mark()
        opt.step()
        mark()
        if times is not None:
            for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True):
                times[name].append(b - a)

    for _ in range(args.warmup):
        step(None)
    times: dict[str, list[float]] = {name: [] for name in PHASES}
    totals = []
    for _ in range(args.runs):
        start = time.perf_counter()
        step(times)
        totals.append(time.perf_counter() - start)

    print(
        f"train step, {args.ndim}D {'x'.join(map(str, size))}, batch {args.batch}, "
        f"K={args.recursions}, device {device}, {torch.get_num_threads()} thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible"
    )
    print(f"{args.runs} runs after {args.warmup} warm-up; seconds (median, min, max):")
    for name in PHASES:
        v = times[name]
        print(f"  {name:16s} {statistics.median(v):7.3f} {min(v):7.3f} {max(v):7.3f}")
    print(f"  {'total':16s} {statistics.median(totals):7.3f} {min(totals):7.3f} {max(totals):7.3f}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            step(None)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=45))


if __name__ == "__main__":
    main()
