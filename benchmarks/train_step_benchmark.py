"""Time one DRDM training step (Algorithm 1): today's trainer beside the previous one.

A step is: draw + augment a batch, forward process (t, psi_t, phi_{t:1}, I_t), network
forward (Eq. 12, K recursions), loss (Eq. 14), backward, Adam. Two variants with the same
initial weights, data and seeds, timed in turns (one step of each, again and again) so that
load changes affect both alike:

* ``previous``: the network as it computed before (PyTorch's convolution dispatch,
  ``nn.InstanceNorm``, default memory layout);
* ``new``: what ``drdm train`` does now (convolutions through oneDNN, instance norm as
  ``group_norm``, channels-last weights and inputs on the CPU,
  :func:`drdm.training.trainer.training_memory_format`).

``--curve N`` then trains both for ``N`` steps from the same start on the same batches and
writes their loss curves into one figure (``--figure``), to show that the learning is the same.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_step_benchmark.py --sizes 64 128 \
        --threads 1 --runs 5 [--curve 200 --figure docs/figures/train_speed_loss.png]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from _previous import previous_network  # noqa: E402
from _timing import median_ratio, turns  # noqa: E402
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig  # noqa: E402
from drdm.losses import drdm_loss  # noqa: E402
from drdm.nn import NetworkConfig, RecursiveUNet  # noqa: E402
from drdm.training import AugmentConfig, augment_batch  # noqa: E402
from drdm.training.trainer import training_memory_format  # noqa: E402


class Run:
    """One training run: network, Adam, its own generators (same seeds for every variant)."""

    def __init__(
        self, network: RecursiveUNet, layout: torch.memory_format, size: int, bf16: bool = False
    ) -> None:
        self.net = network.to(memory_format=layout).train()
        self.layout = layout
        self.bf16 = bf16
        self.opt = torch.optim.Adam(self.net.parameters(), lr=3e-4)
        self.process = ForwardDiffusion(ForwardDiffusionConfig(ndim=network.config.ndim))
        shape = [size] * network.config.ndim
        self.pool = torch.rand(32, 1, *shape, generator=torch.Generator().manual_seed(0))
        self.data_gen = torch.Generator().manual_seed(1)
        self.diff_gen = torch.Generator().manual_seed(2)

    def step(self, batch: int) -> float:
        index = torch.randint(0, len(self.pool), (batch,), generator=self.data_gen)
        images = augment_batch(self.pool[index], AugmentConfig(), self.data_gen)
        t = torch.randint(1, 81, (batch,), generator=self.diff_gen)
        fwd = self.process.sample(images, t, generator=self.diff_gen, perturb=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            psi_hat = self.net(fwd.images.contiguous(memory_format=self.layout), t)
        loss = drdm_loss(fwd.step, psi_hat.float(), lambda_reg=0.15)
        self.opt.zero_grad(set_to_none=True)
        loss.total.backward()
        self.opt.step()
        return float(loss.total.detach())


def variants(size: int, ndim: int, bf16: bool = False) -> dict[str, Run]:
    network = RecursiveUNet(NetworkConfig(ndim=ndim), generator=torch.Generator().manual_seed(0))
    layout = training_memory_format(torch.device("cpu"), ndim)
    runs = {"previous": Run(previous_network(network), torch.contiguous_format, size)}
    if bf16:  # measured, not adopted: the previous network under bfloat16 autocast
        runs["previous, bfloat16 autocast"] = Run(
            previous_network(network), torch.contiguous_format, size, bf16=True
        )
    runs["new"] = Run(network, layout, size)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--ndim", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed turns")
    parser.add_argument("--curve", type=int, default=0, help="steps of the loss-curve run")
    parser.add_argument("--curve-size", type=int, default=64)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"train step, {args.ndim}D, batch {args.batch}, K = 2, {torch.get_num_threads()} "
        f"thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}, torch "
        f"{torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.runs} turns "
        "after one warm-up turn"
    )
    print("\n| size | variant | s / step | vs previous (median of ratios) |")
    print("|---|---|---|---|")
    for size in args.sizes:
        runs = variants(size, args.ndim, args.bf16)
        times = turns(
            {name: partial(run.step, args.batch) for name, run in runs.items()}, args.runs
        )
        for name, values in times.items():
            ratio = median_ratio(values, times["previous"])
            print(
                f"| {size} x {size} | {name} | {statistics.median(values):.3f} | {ratio:.2f}x |",
                flush=True,
            )
    if args.curve:
        runs = variants(args.curve_size, args.ndim)
        losses = {
            name: [run.step(args.batch) for _ in range(args.curve)] for name, run in runs.items()
        }
        tail = max(1, args.curve // 4)
        for name, values in losses.items():
            print(
                f"{name}: mean loss of the last {tail} steps {statistics.mean(values[-tail:]):.4f}"
            )
        if args.figure is not None:
            from drdm.viz import pyplot, save_figure

            plt = pyplot()
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for name, values in losses.items():
                ax.plot(range(1, len(values) + 1), values, label=name, alpha=0.8, lw=1)
            ax.set_xlabel("step")
            ax.set_ylabel("loss (Eq. 14)")
            ax.set_title(
                f"same start, same batches: {args.curve_size}x{args.curve_size}, batch {args.batch}"
            )
            ax.legend()
            save_figure(fig, args.figure)
            print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
