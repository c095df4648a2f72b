"""Diagnosis (a) of issue 17: can the trainer's loss and optimiser fit ONE image?

Three stages, each from the same freshly initialised network, on one image at the model grid:

* ``fixed``: one timestep, ONE forward draw ``(I_t, psi_t)`` reused at every step. A correct
  loss, output scaling and optimiser must drive the unrecovered fraction on that draw
  ``U = E|compose(psi_hat, psi_t)| / E|psi_t|`` towards 0 (pure memorisation).
* ``fresh``: one timestep, a new forward draw every step; U on held-out draws of that t.
* ``all``: ``t ~ U(1, T)``, new draws every step; U per band on held-out draws.

The loss is the trainer's (:func:`drdm.losses.drdm_loss`, Eq. 14, ``lambda_reg`` as in
``configs/default-2d.yaml``) unless ``--loss`` says otherwise; the network is the packaged
default's architecture (``--network``) initialised from ``--seed``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/diagnose_overfit.py --stage fixed --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.diffusion.official_process import OfficialForwardProcess, OfficialProcessConfig
from drdm.io import read_volume
from drdm.losses import drdm_loss, unrecovered_fraction
from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.spatial import compose

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/samples/mnms_OpenDataset_162867.nii.gz"
)


def load_image(path: Path, size: int) -> torch.Tensor:
    """``(1, 1, size, size)`` float32 area-resized image in [0, 1]."""
    array = read_volume(path).array
    image = torch.as_tensor(array, dtype=torch.float32)[None, None]
    return F.interpolate(image, size=(size, size), mode="area")


def loss_fn(kind: str, psi: torch.Tensor, psi_hat: torch.Tensor, lambda_reg: float) -> torch.Tensor:
    if kind == "eq14":
        return drdm_loss(psi, psi_hat, lambda_reg=lambda_reg).total
    if kind == "dist":  # the distance term alone
        return drdm_loss(psi, psi_hat, lambda_angle=0.0, lambda_reg=0.0).distance
    if kind == "mse":  # plain regression onto the negated step
        return F.mse_loss(psi_hat, -psi)
    if kind == "residual":  # absolute residual in voxels, no per-voxel normalisation
        return compose(psi_hat, psi).norm(dim=1).mean()
    raise ValueError(kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("fixed", "fresh", "all"), default="fixed")
    parser.add_argument("--t", type=int, default=40)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--loss", choices=("eq14", "dist", "mse", "residual"), default="eq14")
    parser.add_argument("--lambda-reg", type=float, default=0.15)
    parser.add_argument("--network", default="{}", help="JSON overrides of NetworkConfig")
    parser.add_argument("--forward", default="{}", help="JSON overrides of the process config")
    parser.add_argument(
        "--process",
        choices=("drdm", "official"),
        default="drdm",
        help="the package's forward process or the authors' (preset 'official')",
    )
    parser.add_argument("--perturb", action="store_true", help="training perturbation (5 %%)")
    parser.add_argument(
        "--template",
        action="store_true",
        help="also give the network I_0 (a second channel; one recursion): registration to a "
        "known template instead of inference from I_t alone",
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-draws", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-minutes", type=float, default=None, help="stop after this CPU time")
    parser.add_argument("--json", type=Path, default=None, help="write the curve here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    image = load_image(args.image, args.size)
    overrides = {"in_channels": 2, "recursions": 1} if args.template else {}
    net_cfg = NetworkConfig(
        **{"widths": (10, 20, 40), "bottleneck_width": 20, **overrides, **json.loads(args.network)}
    )
    network = RecursiveUNet(net_cfg, generator=torch.Generator().manual_seed(args.seed))

    def net(images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if args.template:
            images = torch.cat([images, image.expand(images.shape[0], -1, -1, -1)], dim=1)
        return network(images, t)

    if args.process == "official":  # diagnosis (b): the authors' process, our trainer and loss
        process = OfficialForwardProcess(OfficialProcessConfig(**json.loads(args.forward)))
    else:
        process = ForwardDiffusion(ForwardDiffusionConfig(**json.loads(args.forward)))
    optim = torch.optim.Adam(network.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)
    eval_gen = torch.Generator().manual_seed(10_000 + args.seed)
    t_max = process.config.num_steps

    if args.stage == "all":
        edges = [(1, 20), (21, 40), (41, 60), (61, 80)]
    else:
        edges = [(args.t, args.t)]
    # held-out evaluation draws (the fixed stage trains on exactly its evaluation draw)
    evals = []
    for lo, hi in edges:
        n = 1 if args.stage == "fixed" else args.eval_draws
        t = torch.randint(lo, hi + 1, (n,), generator=eval_gen)
        fwd = process.sample(
            image.expand(n, -1, -1, -1), t, generator=eval_gen, perturb=args.perturb
        )
        evals.append((t, fwd.images, fwd.step))

    def evaluate() -> list[float]:
        network.eval()
        with torch.no_grad():
            out = [float(unrecovered_fraction(step, net(images, t))) for t, images, step in evals]
        network.train()
        return out

    print(
        f"stage {args.stage}, t {args.t if args.stage != 'all' else '1..T'}, loss {args.loss}, "
        f"lambda_reg {args.lambda_reg}, lr {args.lr}, batch {args.batch}, size {args.size}, "
        f"network {net_cfg.to_dict()}, {platform.machine()}, torch {torch.__version__}, 1 thread, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    curve = [{"step": 0, "seconds": 0.0, "U": evaluate()}]
    print(f"step 0: U {[f'{u:.3f}' for u in curve[-1]['U']]}")
    start = time.perf_counter()
    cpu_start = time.process_time()
    for step in range(1, args.steps + 1):
        if args.stage == "fixed":
            t, images, psi = evals[0]
            t, images, psi = (
                t.expand(args.batch),
                images.expand(args.batch, -1, -1, -1),
                psi.expand(args.batch, -1, -1, -1),
            )
        else:
            if args.stage == "fresh":
                t = torch.full((args.batch,), args.t)
            else:
                t = torch.randint(1, t_max + 1, (args.batch,), generator=gen)
            fwd = process.sample(
                image.expand(args.batch, -1, -1, -1), t, generator=gen, perturb=args.perturb
            )
            images, psi = fwd.images, fwd.step
        psi_hat = net(images, t)
        loss = loss_fn(args.loss, psi, psi_hat, args.lambda_reg)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        cpu = time.process_time() - cpu_start
        over = args.cpu_minutes is not None and cpu > 60 * args.cpu_minutes
        if step % args.eval_every == 0 or step == args.steps or over:
            curve.append(
                {
                    "step": step,
                    "seconds": time.perf_counter() - start,
                    "cpu_seconds": cpu,
                    "loss": float(loss.detach()),
                    "U": evaluate(),
                }
            )
            print(
                f"step {step} ({cpu:.0f} CPU s): loss {float(loss.detach()):.4f} "
                f"U {[f'{u:.3f}' for u in curve[-1]['U']]}",
                flush=True,
            )
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(
                    json.dumps(
                        {"args": {k: str(v) for k, v in vars(args).items()}, "curve": curve},
                        indent=1,
                    )
                )
        if over:
            break


if __name__ == "__main__":
    main()
