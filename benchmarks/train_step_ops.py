"""How many tensor operations does one training step issue, and where?

On a GPU the trainer's small networks run at the speed at which operations can be launched,
not at the speed of the arithmetic: in issue 12's GPU session a step took 0.23-0.27 s. This
script counts the ``aten::`` operator calls of one training step (torch.profiler, CPU) for a
config, and of its parts: the forward process, the augmentation and the network's forward and
backward pass (the rest is the loss and the optimiser). The counts do not depend on the
device much, and barely on the batch size (batched operations), so a larger batch is almost
free on a GPU.

    python benchmarks/train_step_ops.py configs/training/default-2d-eq14.yaml \
        configs/default-3d.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from drdm.diffusion import ForwardDiffusion
from drdm.training import augment_batch, build_training_data, load_train_config
from drdm.training import trainer as tr
from drdm.training.distributed import setup, teardown


def aten_calls(fn: Callable[[], object]) -> int:
    """The number of ``aten::`` operator calls ``fn()`` makes."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def count_config(path: Path, phantoms: int) -> tuple[int, list[int]]:
    """The batch size and the operator counts of one step of the config at ``path`` and of
    its parts (forward process, augmentation, network forward and backward)."""
    config = load_train_config(path)
    ph = config.data.phantoms
    if ph is not None:
        ph = dataclasses.replace(ph, count=phantoms)
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, phantoms=ph, files=())
    )
    ctx = setup("cpu")
    try:
        state = tr._initial_state(config, ctx, None)
        data = build_training_data(config.data, ".")
        process = ForwardDiffusion(config.forward)
        batch = config.optim.batch_size
        images = data.images[torch.arange(batch) % len(data)]
        t = torch.randint(1, config.forward.num_steps + 1, (batch,))

        def step() -> None:
            total, _ = tr._step_losses(
                state.model, process, data, data.images, config, batch, ctx, state
            )
            tr._apply_gradients(total, state, None)

        def network() -> None:
            state.model(images, t).sum().backward()

        step()  # warm-up
        return batch, [
            aten_calls(step),
            aten_calls(lambda: process.sample(images, t, perturb=True)),
            aten_calls(lambda: augment_batch(images, config.data.augment, torch.Generator())),
            aten_calls(network),
        ]
    finally:
        teardown(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", type=Path, nargs="+")
    parser.add_argument("--phantoms", type=int, default=8, help="phantoms to load (speed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| config | batch | whole step | forward process | augmentation | network fwd+bwd |")
    print("|---|---|---|---|---|---|")
    for path in args.configs:
        batch, counts = count_config(path, args.phantoms)
        print(f"| {path} | {batch} | " + " | ".join(str(c) for c in counts) + " |")


if __name__ == "__main__":
    main()
