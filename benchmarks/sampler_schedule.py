"""Fewer network calls in the recovery loop: what each sampler setting costs and changes.

For every sampler setting (network every ``stride``-th timestep, the rule for the skipped
steps, recursions ``K`` at sampling), beside the full sampler (stride 1, the network's K) in
the same run, on the same image and the same seeds:

* **time**: one 256 x 256 deformation at T' = 55 and the time per deformation in a batch of
  8, medians of ``--repeats`` turns (every setting once per turn, after a warm-up turn);
* **Table 1** (paper): mean and max ``|phi|`` in % of the image size and the fold ratio, at
  T' = 30, 45, 55, 65, 70, ``--samples`` deformations each; the same generator seeds give
  every setting the same random starting fields, so ``field diff`` (mean ``|phi - phi_full|``
  over mean ``|phi_full|``) isolates what the setting changes;
* **recovery**: the unrecovered fraction ``U = E|r| / E|psi|`` over the span of timesteps one
  call stands for. A forward draw (5 % perturbation, as in training) gives ``I_t``,
  ``phi_{t:1}`` and ``psi = psi_{t:t-s+1}``, the last ``s`` forward steps
  (``ForwardDiffusion.sample_fields(span=s)``); the setting's recovery ``psi_hat`` is its one
  call repeated by its skip rule, the full sampler's the composition of ``s`` calls at
  ``t, ..., t - s + 1``, each on the original image warped by the field so far (Algorithm 2);
  ``r = compose(psi_hat, psi)`` (``r[x] = psi[x + psi_hat[x]] + psi_hat[x]``; the zero field
  gives U = 1, a perfect inverse 0). At ``s = 1`` this is the per-step U of the model.

The model runs on its own grid (64 x 64 for the packaged default); the image is the real M&Ms
slice from ``../shared`` when present, else a built-in cardiac phantom.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/sampler_schedule.py [--model default]
        [--settings 1 2 4 8 4v 8v 1k1 4k1] [--samples 20] [--threads 1] [--quick]

A setting is ``<stride>[v|s][k<K>]``: ``4`` is stride 4 with composed skips, ``4v`` the velocity
rule, ``4s`` the schedule-weighted ("shares") rule, ``4k1`` one recursion at sampling.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _timing import turns  # noqa: E402
from drdm import DRDM  # noqa: E402
from drdm.data.phantoms import cardiac_phantom_2d  # noqa: E402
from drdm.io import read_volume  # noqa: E402
from drdm.sampling import SamplerConfig, repeat_step, schedule_share  # noqa: E402
from drdm.spatial import compose, fold_ratio, magnitude_stats, warp  # noqa: E402

LEVELS = (30, 45, 55, 65, 70)
BANDS = ((1, 20), (21, 40), (41, 60), (61, 80))
DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/samples/mnms_OpenDataset_162867.nii.gz"
)


SKIPS = {"": "compose", "v": "velocity", "s": "shares"}
SETTING = r"(\d+)([vs]?)(?:k(\d+))?"


def parse_setting(text: str, base: SamplerConfig) -> SamplerConfig:
    """``"4"``, ``"4v"``, ``"4s"``, ``"4k1"``, ``"8vk1"`` -> a :class:`SamplerConfig`."""
    match = re.fullmatch(SETTING, text)
    if match is None:
        raise SystemExit(f"bad setting {text!r}: expected <stride>[v|s][k<K>], e.g. 4, 4s, 4k1")
    stride, skip, k = match.groups()
    return dataclasses.replace(
        base,
        stride=int(stride),
        schedule=None,
        skip=SKIPS[skip],
        recursions=int(k) if k else None,
    )


def generate(model: DRDM, image: torch.Tensor, config: SamplerConfig, samples: int) -> None:
    """``samples`` deformations of ``image`` at T' = 55 in one call (what is timed)."""
    model.generate(image, 55, num_samples=samples, generator=torch.Generator().manual_seed(0),
                   sampler=config)  # fmt: skip


def table1(
    model: DRDM, image: torch.Tensor, config: SamplerConfig, samples: int, seed: int
) -> dict[int, torch.Tensor]:
    fields = {}
    for level in LEVELS:
        g = torch.Generator().manual_seed(seed + level)
        fields[level] = model.generate(
            image, level, num_samples=samples, generator=g, sampler=config
        ).ddf.double()
    return fields


def unrecovered(
    model: DRDM,
    image: torch.Tensor,
    config: SamplerConfig | None,
    span: int,
    draws: int,
    seed: int,
) -> list[float]:
    """U per band over a span of ``span`` timesteps (see module docstring): one call of
    ``config`` repeated by its skip rule, or with ``config=None`` the full sampler (``span``
    calls). The same seed gives both the same draws."""
    net, process = model.network, model.process
    out = []
    for lo, hi in BANDS:
        g = torch.Generator().manual_seed(seed + lo)
        t = torch.randint(max(lo, span), hi + 1, (draws,), generator=g)
        x0 = image.expand(draws, *image.shape[1:])
        with torch.inference_mode():
            fields = process.sample_fields(x0.shape[2:], t, g, perturb=True, batch=draws, span=span)
            phi = fields.cumulative
            current = warp(x0, phi)
            if config is not None:
                kwargs = {} if config.recursions is None else {"recursions": config.recursions}
                psi = net(current, t, **kwargs)
                weight = schedule_share(process, t, span) if config.skip == "shares" else None
                recovered = repeat_step(psi, span, config.skip, config.compose_padding, weight)
            else:
                recovered = torch.zeros_like(phi)
                for k in range(span):
                    psi = net(current, t - k)
                    recovered = compose(psi, recovered)
                    phi = compose(psi, phi)
                    current = warp(x0, phi)
            r = compose(recovered, fields.step)
            ratio = r.norm(dim=1).mean() / fields.step.norm(dim=1).mean()
        out.append(float(ratio))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="packaged name or checkpoint dir")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--settings", nargs="+", default=["1", "2", "4", "8", "4v", "8v", "4k1"])
    parser.add_argument("--samples", type=int, default=20, help="deformations per level")
    parser.add_argument("--draws", type=int, default=16, help="forward draws per band for U")
    parser.add_argument("--repeats", type=int, default=3, help="timed single deformations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4 samples, 4 draws, 1 repeat")
    parser.add_argument(
        "--recovery-only", action="store_true", help="only the U table (large model grids)"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.draws, args.repeats = 4, 4, 1
    torch.set_num_threads(args.threads)
    model = DRDM.from_pretrained(args.model)
    if args.image.is_file():
        image = torch.as_tensor(read_volume(args.image).array, dtype=torch.float32)
        source = args.image.name
    else:
        image = torch.as_tensor(cardiac_phantom_2d(256, generator=0).image, dtype=torch.float32)
        source = "built-in cardiac phantom (seed 0)"
    small = F.interpolate(image[None, None], size=model.image_size, mode="bilinear")
    load = os.getloadavg()[0]
    print(
        f"model {args.model!r} (grid {model.image_size}, T = {model.num_steps}, K = "
        f"{model.network.config.recursions}); image {source} {tuple(image.shape)}; "
        f"{args.samples} deformations per level, {args.draws} draws per band, seed {args.seed}"
    )
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {load:.2f} at start"
    )
    base = dataclasses.replace(model.sampler, stride=1, schedule=None, recursions=None)
    configs = {name: parse_setting(name, base) for name in args.settings}
    if "1" not in configs:
        configs = {"1": base, **configs}
    # timing first, in turns (one run of every setting, then again), so that load changes
    # affect every setting alike
    repeats = 0 if args.recovery_only else args.repeats
    singles = turns(
        {name: partial(generate, model, image, config, 1) for name, config in configs.items()},
        repeats,
    )
    batches = turns(
        {name: partial(generate, model, image, config, 8) for name, config in configs.items()},
        repeats,
    )
    full_fields = None
    rows = []
    for name, config in configs.items():
        if args.recovery_only:
            u_setting = unrecovered(model, small, config, config.stride, args.draws, args.seed)
            u_full = unrecovered(model, small, None, config.stride, args.draws, args.seed)
            rows.append((name, config, 0.0, 0.0, {}, u_setting, u_full))
            print(f"  measured {name}", flush=True)
            continue
        one, batch = statistics.median(singles[name]), statistics.median(batches[name]) / 8
        fields = table1(model, image, config, args.samples, args.seed)
        if full_fields is None:
            full_fields = fields
        u_setting = unrecovered(model, small, config, config.stride, args.draws, args.seed)
        u_full = unrecovered(model, small, None, config.stride, args.draws, args.seed)
        rows.append((name, config, one, batch, fields, u_setting, u_full))
        print(f"  measured {name}", flush=True)
    if not args.recovery_only:
        assert full_fields is not None
        print_speed_and_table1(model, rows, full_fields)
    print_recovery(rows)


def print_speed_and_table1(model: DRDM, rows: list, full_fields: dict) -> None:
    t_full = rows[0][2]
    print("\n### Speed (T' = 55, 256 x 256)\n")
    print("| setting | network calls | s / deformation | vs full | s / deformation in batch 8 |")
    print("|---|---|---|---|---|")
    for name, config, one, batch, *_ in rows:
        k = config.recursions or model.network.config.recursions
        calls = len(range(55, 0, -config.stride)) * k
        print(f"| {_label(name)} | {calls} | {one:.3f} | {one / t_full:.2f}x | {batch:.3f} |")
    print("\n### Table 1 (mean ± std over deformations) and difference to the full sampler\n")
    print("| setting | T' | mean \\|φ\\| % | max \\|φ\\| % | folds % | field diff |")
    print("|---|---|---|---|---|---|")
    for name, _config, _one, _batch, fields, *_ in rows:
        for level in LEVELS:
            ddf, ref = fields[level], full_fields[level]
            stats, folds = magnitude_stats(ddf), fold_ratio(ddf) * 100
            diff = (ddf - ref).norm(dim=1).mean() / ref.norm(dim=1).mean()
            print(
                f"| {_label(name)} | {level} | {_pm(stats.mean_percent)} "
                f"| {_pm(stats.max_percent)} | {_pm(folds, 2)} | {diff:.3f} |"
            )


def print_recovery(rows: list) -> None:
    print("\n### Unrecovered fraction U over the span of one call (full sampler beside)\n")
    bands = " | ".join(f"t {lo}-{hi}" for lo, hi in BANDS)
    print(f"| setting | span | {bands} |")
    print("|---|---|" + "---|" * len(BANDS))
    for name, config, _one, _batch, _fields, u_setting, u_full in rows:
        cells = " | ".join(f"{a:.3f} ({b:.3f})" for a, b in zip(u_setting, u_full, strict=True))
        print(f"| {_label(name)} | {config.stride} | {cells} |")


def _label(name: str) -> str:
    match = re.fullmatch(SETTING, name)
    assert match is not None
    stride, skip, k = match.groups()
    text = f"stride {stride}"
    if int(stride) > 1:
        text += {"": ", composed", "v": ", velocity", "s": ", shares"}[skip]
    if k:
        text += f", K = {k}"
    return text


def _pm(values: torch.Tensor, digits: int = 2) -> str:
    return f"{values.mean().item():.{digits}f} ± {values.std().item():.{digits}f}"


if __name__ == "__main__":
    main()
