"""Registration with synthetic pre-training (paper Section 5, Table 3).

For every seed and synthetic method (``drdm``, ``mrbs``, ...): make ``copies`` synthetic
triples ``(moving, fixed, ddf_syn)`` per training image (Algorithm 4,
:func:`drdm.pipelines.synthesize_pair`), pre-train a VoxelMorph-style U-Net on them with the loss of
Eq. 20, evaluate it, then fine-tune it without supervision on real inter-subject pairs of the
training images (image similarity + smoothness, as VoxelMorph) and evaluate again. The method
``none`` is the identity transform before fine-tuning (the initial alignment) and training on
real pairs only after. Test pairs are labelled pairs of different held-out subjects; the
moving labels are warped by the predicted field and compared with the fixed labels (DSC, ASD,
HD95) and the fold ratio (negative Jacobian determinant) of the field is reported.

Outputs: ``config.yaml``, ``results.csv`` (one row per seed, method, fine-tuning, pair and
class), ``table.md`` (Table-3 style, with the setting stated), ``boxplot.png`` and, in 2D,
``examples.png`` (synthetic triples of the first seed).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import save_config
from ..errors import InputError
from ..seeding import key_generator
from ..spatial import magnitude_stats, warp, warp_labels
from .common import (
    ExperimentData,
    ExperimentResult,
    RunInfo,
    check_out_dir,
    choose_from_pool,
    describe_model,
    load_model,
    machine_line,
    set_threads,
    split_pool,
    train_phantoms,
    train_with_adam,
)
from .config import RegistrationConfig
from .datasets import (
    CARDIAC_CLASSES,
    THORAX_CLASSES,
    LabelledImage,
    cardiac_phantoms,
    read_lung_folder,
    thorax_phantoms,
)
from .losses import gradient_penalty, registration_loss, similarity_loss
from .report import box_plots, mean_std, pm, triple_figure, write_csv, write_text
from .unet import registration_unet

__all__ = ["RegistrationResult", "make_triples", "run_registration"]

METRICS = ("dsc", "asd", "hd95", "fold_ratio")
COLUMNS = ("seed", "method", "finetuned", "pair", "class", *METRICS)


RegistrationResult = ExperimentResult  # rows, out_dir, table, seconds


def _first_per_subject(items: list[LabelledImage]) -> list[LabelledImage]:
    seen: dict[str, LabelledImage] = {}
    for it in items:
        seen.setdefault(it.subject, it)
    return [seen[s] for s in sorted(seen)]


def _load_data(cfg: RegistrationConfig) -> ExperimentData:
    if cfg.data == "phantoms":
        test = cardiac_phantoms(
            cfg.test_subjects, cfg.image_size, cfg.data_seed, cfg.phantom_fov_mm, prefix="test"
        )
        desc = (
            "built-in 2D cardiac phantoms (cardiac_phantom_2d, "
            f"{cfg.phantom_fov_mm:g} mm field of view)"
        )
        return ExperimentData(test, [], dict(CARDIAC_CLASSES), desc, "phantoms", 2)
    if cfg.data == "thorax":
        test = thorax_phantoms(cfg.test_subjects, cfg.image_size, cfg.data_seed, prefix="test")
        desc = "built-in 3D thorax CT phantoms (thorax_phantom_3d)"
        return ExperimentData(test, [], dict(THORAX_CLASSES), desc, "thorax", 3)
    items = _first_per_subject(read_lung_folder(cfg.data, cfg.image_size))
    pool, test = split_pool(items, cfg.test_subjects, cfg.data_seed)
    values = sorted({int(v) for it in items for v in np.unique(it.label) if v != 0})
    classes = {
        v: THORAX_CLASSES.get(v, f"class {v}") if len(values) > 1 else "lung" for v in values
    }
    desc = f"Learn2Reg-style lung CT folder `{cfg.data}` (one scan per subject)"
    return ExperimentData(test, pool, classes, desc, None, 3)


def _train_items(cfg: RegistrationConfig, data: ExperimentData, seed: int) -> list[LabelledImage]:
    if data.phantoms is not None:
        return train_phantoms(
            data.phantoms,
            cfg.train_subjects,
            cfg.image_size,
            cfg.data_seed,
            seed,
            cfg.phantom_fov_mm,
        )
    subjects = {it.subject for it in data.train_pool}
    return choose_from_pool(data.train_pool, min(cfg.train_subjects, len(subjects)), seed)


def _samplers(method: str, ndim: int, model: Any, levels: tuple[int, int]) -> tuple[Any, Any]:
    from ..pipelines.registry import make_method

    if method == "drdm":
        aug = make_method("drdm", ndim, model=model, level=levels[0])[0]
        syn = make_method("drdm", ndim, model=model, level=levels[1])[0]
        return aug, syn
    sampler = make_method(method, ndim)[0]
    if sampler is None:
        raise InputError(f"method {method!r} has no deformation sampler")
    return sampler, sampler


def make_triples(
    items: list[LabelledImage],
    method: str,
    copies: int,
    seed: int,
    model: Any = None,
    level_pairs: list[tuple[int, int]] | None = None,
    slice_axis: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic training triples (Algorithm 4) from ``items``.

    Returns ``(moving (N, 1, *spatial), fixed (N, 1, *spatial), ddf_syn (N, ndim, *spatial))``
    with ``N = len(items) * copies``, ``fixed ≈ warp(moving, ddf_syn)`` (voxels, pull-back).
    Copy ``k`` uses the level pair ``level_pairs[k mod n]`` (DRDM only). The randomness of
    copy ``k`` of image ``i`` comes from a generator seeded by ``(seed, i, k, method)`` (and
    the level pair for DRDM).
    """
    from ..pipelines.core import synthesize_pair

    pairs = level_pairs or [(0, 0)]
    ndim = items[0].ndim
    samplers = {p: _samplers(method, ndim, model, p) for p in set(pairs)}
    moving, fixed, fields = [], [], []
    for i, item in enumerate(items):
        for k in range(copies):
            pair = pairs[k % len(pairs)]
            aug, syn = samplers[pair]
            key = pair if method == "drdm" else None  # levels matter to DRDM only
            g = key_generator("registration-triple", seed, i, k, method, key)
            axis = slice_axis if (ndim == 3 and getattr(syn, "ndim", ndim) == 2) else None
            res = synthesize_pair(aug, syn, item.image, generator=g, slice_axis=axis)
            moving.append(torch.from_numpy(np.asarray(res.moving, dtype=np.float32)))
            fixed.append(torch.from_numpy(np.asarray(res.fixed, dtype=np.float32)))
            fields.append(torch.from_numpy(np.asarray(res.ddf_syn, dtype=np.float32)))
    return torch.stack(moving)[:, None], torch.stack(fixed)[:, None], torch.stack(fields)


def _pretrain(
    net: torch.nn.Module,
    triples: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: RegistrationConfig,
    seed: int,
    device: torch.device,
) -> list[float]:
    moving, fixed, target = (t.to(device) for t in triples)
    g = key_generator("registration-pretrain-batches", seed)

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, moving.shape[0], (cfg.batch_size,), generator=g).to(device)
        pred = net(torch.cat([moving[idx], fixed[idx]], dim=1))
        return registration_loss(pred, target[idx], cfg.lambda_mse, cfg.lambda_grad)  # Eq. 20

    return train_with_adam(net, cfg.pretrain_steps, cfg.lr, batch_loss)


def _finetune(
    net: torch.nn.Module,
    images: torch.Tensor,
    cfg: RegistrationConfig,
    seed: int,
    device: torch.device,
) -> list[float]:
    """Unsupervised training on random inter-subject pairs ``(i, j), i != j`` of ``images``
    ``(N, 1, *spatial)``: ``similarity(warp(moving, ddf), fixed) + w * ||grad ddf||^2``."""
    images = images.to(device)
    n = images.shape[0]
    if n < 2:
        raise InputError("unsupervised fine-tuning needs at least 2 training images")
    g = key_generator("registration-finetune-batches", seed)

    def batch_loss() -> torch.Tensor:
        i = torch.randint(0, n, (cfg.batch_size,), generator=g)
        j = (i + torch.randint(1, n, (cfg.batch_size,), generator=g)) % n
        mv, fx = images[i.to(device)], images[j.to(device)]
        ddf = net(torch.cat([mv, fx], dim=1))
        loss = similarity_loss(warp(mv, ddf), fx, cfg.similarity)  # type: ignore[arg-type]
        return loss + cfg.smooth_weight * gradient_penalty(ddf, "l2")

    return train_with_adam(net, cfg.finetune_steps, cfg.lr, batch_loss)


def _stack(items: list[LabelledImage]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([torch.from_numpy(np.asarray(it.image, np.float32)) for it in items])
    labels = torch.stack([torch.from_numpy(np.asarray(it.label, np.int64)) for it in items])
    return images[:, None], labels[:, None]


@torch.no_grad()
def _evaluate(
    net: torch.nn.Module | None,
    test: list[LabelledImage],
    classes: dict[int, str],
    units: str,
) -> list[dict[str, Any]]:
    from .. import metrics

    images, labels = _stack(test)
    n = len(test)
    rows = []
    for k in range(n):
        m, f = k, (k + 1) % n
        mv, fx = images[m : m + 1], images[f : f + 1]
        if net is None:
            ddf = torch.zeros(1, mv.dim() - 2, *mv.shape[2:])
        else:
            device = next(net.parameters()).device
            net.eval()
            ddf = net(torch.cat([mv, fx], dim=1).to(device)).cpu()
        warped = warp_labels(labels[m : m + 1], ddf)[0, 0].numpy()
        fixed = labels[f, 0].numpy()
        spacing = test[f].spacing if units == "mm" else None
        fold = metrics.fold_ratio(ddf[0])
        pair = f"{test[m].name}->{test[f].name}"
        for value, name in classes.items():
            p, t = warped == value, fixed == value
            rows.append(
                {
                    "pair": pair,
                    "class": name,
                    "dsc": metrics.dice(p, t, labels=1),
                    "asd": metrics.average_surface_distance(p, t, labels=1, spacing=spacing),
                    "hd95": metrics.hausdorff95(p, t, labels=1, spacing=spacing),
                    "fold_ratio": fold,
                }
            )
    return rows


def _row_label(method: str, finetuned: bool) -> str:
    return f"{'N/A' if method == 'none' else method.upper()} / {'real' if finetuned else '-'}"


def _table(
    rows: list[dict[str, Any]], order: list[tuple[str, bool]], header: str, units: str
) -> str:
    seeds = sorted({r["seed"] for r in rows})
    u = "vox" if units == "voxel" else "mm"
    lines = [
        header,
        "",
        "Mean ± std over test pairs and seeds (each pair's metrics averaged over the classes); "
        "the last columns give the mean DSC per seed.",
        "",
        f"| synth method | real train | DSC (%) | ASD ({u}) | HD95 ({u}) | folds (% det J < 0) | "
        + " | ".join(f"DSC seed {s}" for s in seeds)
        + " |",
        "|" + "---|" * (6 + len(seeds)),
    ]
    for method, ft in order:
        sel = [r for r in rows if r["method"] == method and r["finetuned"] == ft]
        if not sel:
            continue
        per_pair: dict[tuple, list[dict[str, Any]]] = {}
        for r in sel:
            per_pair.setdefault((r["seed"], r["pair"]), []).append(r)
        avg = {
            key: {m: float(np.mean([r[m] for r in rs])) for m in METRICS}
            for key, rs in per_pair.items()
        }
        fold = (
            "-"
            if (method == "none" and not ft)
            else pm((a["fold_ratio"] for a in avg.values()), 100.0, 2)
        )
        seed_dsc = [
            mean_std(a["dsc"] for (s, _), a in avg.items() if s == seed)[0] for seed in seeds
        ]
        lines.append(
            f"| {'N/A' if method == 'none' else method.upper()} | {'✓' if ft else '×'} | "
            f"{pm((a['dsc'] for a in avg.values()), 100.0, 1)} | "
            f"{pm((a['asd'] for a in avg.values()), 1.0, 2)} | "
            f"{pm((a['hd95'] for a in avg.values()), 1.0, 2)} | {fold} | "
            + " | ".join(f"{100 * d:.1f}" for d in seed_dsc)
            + " |"
        )
    lines += ["", "†k: k cases left out of a distance mean (an empty warped mask)."]
    return "\n".join(lines) + "\n"


def run_registration(
    cfg: RegistrationConfig,
    out_dir: str | Path,
    model: Any | None = None,
    log: Any = print,
) -> RegistrationResult:
    """Run the registration experiment described by ``cfg`` and write its result folder."""
    from ..device import resolve_device

    cfg.validate()
    info = RunInfo(log)
    out = check_out_dir(out_dir)
    device = resolve_device(cfg.device)
    threads = set_threads(cfg.threads)
    data = _load_data(cfg)
    if "drdm" in cfg.methods and model is None:
        model = load_model(cfg.model, device)
    if model is not None and "drdm" in cfg.methods and model.ndim > data.ndim:
        raise InputError(f"a {model.ndim}D DRDM model cannot deform {data.ndim}D images")
    save_config(cfg, out / "config.yaml")
    level_pairs = list(zip(cfg.drdm_levels_aug, cfg.drdm_levels_syn, strict=True))
    order = [("none", False)] + [(m, False) for m in cfg.methods]
    if cfg.finetune:
        order += [("none", True)] + [(m, True) for m in cfg.methods]
    info.say(
        f"registration ({data.ndim}D): rows {[_row_label(*o) for o in order]}, "
        f"{len(cfg.seeds)} seed(s), {len(data.test)} test pairs"
    )
    rows: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {}
    field_sizes: dict[str, list[tuple[float, float]]] = {}
    examples: dict[str, list] = {}
    for seed in cfg.seeds:
        train = _train_items(cfg, data, seed)
        train_images, _ = _stack(train)
        for method in ["none", *cfg.methods]:
            t0 = time.perf_counter()
            if method == "none":
                net = None
                info_line = "identity"
            else:
                triples = make_triples(
                    train, method, cfg.copies, seed, model, level_pairs, cfg.slice_axis
                )
                t_syn = time.perf_counter() - t0
                net = registration_unet(
                    data.ndim, cfg.widths, key_generator("registration-init", seed)
                ).to(device)
                losses = _pretrain(net, triples, cfg, seed, device)
                if seed == cfg.seeds[0] and data.ndim == 2:
                    examples[method] = [
                        (triples[0][k, 0].numpy(), triples[1][k, 0].numpy(), triples[2][k].numpy())
                        for k in range(min(2, triples[0].shape[0]))
                    ]
                stats = magnitude_stats(triples[2])
                field_sizes.setdefault(method, []).append(
                    (float(stats.mean_percent.mean()), float(stats.max_percent.max()))
                )
                info_line = (
                    f"{triples[0].shape[0]} triples ({t_syn:.0f} s, mean |u| "
                    f"{field_sizes[method][-1][0]:.1f} % of the size), pre-training loss "
                    f"{np.mean(losses[-20:]):.4f}"
                )
            for r in _evaluate(net, data.test, data.classes, cfg.distance_units):
                rows.append({"seed": seed, "method": method, "finetuned": False, **r})
            if cfg.finetune:
                if net is None:
                    net = registration_unet(
                        data.ndim, cfg.widths, key_generator("registration-init", seed)
                    ).to(device)
                tuned = copy.deepcopy(net)
                ft_losses = _finetune(tuned, train_images, cfg, seed, device)
                info_line += f"; fine-tuning loss {np.mean(ft_losses[-20:]):.4f}"
                for r in _evaluate(tuned, data.test, data.classes, cfg.distance_units):
                    rows.append({"seed": seed, "method": method, "finetuned": True, **r})
            dt = time.perf_counter() - t0
            times.setdefault(method, []).append(dt)
            last = [r["dsc"] for r in rows if r["seed"] == seed and r["method"] == method]
            info.say(
                f"seed {seed} {method}: {info_line}; mean DSC {100 * np.mean(last):.1f} %, "
                f"{dt:.0f} s"
            )
            _write(
                cfg, out, rows, order, data, model, threads, device, info, times, field_sizes, False
            )
    table = _write(
        cfg, out, rows, order, data, model, threads, device, info, times, field_sizes, True
    )
    if examples:
        triple_figure(out / "examples.png", examples, f"synthetic triples (seed {cfg.seeds[0]})")
    return RegistrationResult(rows=rows, out_dir=out, table=table, seconds=info.elapsed())


def _write(
    cfg: RegistrationConfig,
    out: Path,
    rows: list[dict[str, Any]],
    order: list[tuple[str, bool]],
    data: ExperimentData,
    model: Any,
    threads: int,
    device: torch.device,
    info: RunInfo,
    times: dict[str, list[float]],
    field_sizes: dict[str, list[tuple[float, float]]],
    final: bool,
) -> str:
    write_csv(out / "results.csv", rows, COLUMNS)
    sizes = "; ".join(
        f"{m} mean {np.mean([v[0] for v in vs]):.1f} %, max {max(v[1] for v in vs):.1f} %"
        for m, vs in field_sizes.items()
    )
    seeds = sorted({r["seed"] for r in rows})
    size = " x ".join([str(cfg.image_size)] * data.ndim)
    model_line = (
        describe_model(cfg.model, model)
        if model is not None and "drdm" in cfg.methods
        else "not used"
    )
    pairs = ", ".join(
        f"({a}, {s})" for a, s in zip(cfg.drdm_levels_aug, cfg.drdm_levels_syn, strict=True)
    )
    per_method = ", ".join(f"{k} {np.mean(v):.0f} s" for k, v in times.items())
    header = "\n".join(
        [
            f"**Registration experiment** ({'final' if final else 'partial'}: "
            f"{len(seeds)} of {len(cfg.seeds)} seeds).",
            "",
            f"- data: {data.description}; image size {size}; classes "
            f"{', '.join(data.classes.values())}",
            f"- training: {cfg.train_subjects} image(s) per seed, {cfg.copies} synthetic "
            f"triples per image (Algorithm 4), pre-training {cfg.pretrain_steps} steps with "
            f"Eq. 20 (lambda {cfg.lambda_mse:g}, {cfg.lambda_grad:g}), fine-tuning "
            + (
                f"{cfg.finetune_steps} steps on real inter-subject pairs ({cfg.similarity} + "
                f"{cfg.smooth_weight:g} x squared gradient)"
                if cfg.finetune
                else "off"
            )
            + f"; batch {cfg.batch_size}, Adam lr {cfg.lr:g}, U-Net widths {list(cfg.widths)}",
            f"- test: {len(data.test)} held-out subjects, {len(data.test)} inter-subject pairs "
            "(k -> k+1); distances in "
            f"{'voxels' if cfg.distance_units == 'voxel' else 'mm'}",
            f"- seeds {', '.join(map(str, seeds))} (one training per seed and row, no other "
            f"repeats); DRDM model: {model_line}; DRDM level pairs (T'_aug, T'_syn): {pairs}",
            f"- synthetic fields ddf_syn, |u| in % of the image size: {sizes or 'none'}",
            f"- machine: {machine_line(device)}; threads {threads}",
            f"- wall time {info.elapsed():.0f} s (mean per seed and method, incl. synthesis: "
            f"{per_method})",
        ]
    )
    table = _table(rows, order, header, cfg.distance_units)
    write_text(out / "table.md", table)
    if final:
        labels = [_row_label(m, f) for m, f in order]
        panels: dict[str, dict[str, list[float]]] = {}
        for metric, title in (("dsc", "DSC"), ("asd", "ASD"), ("hd95", "HD95")):
            panels[title] = {}
            for (m, f), label in zip(order, labels, strict=True):
                sel = [r for r in rows if r["method"] == m and r["finetuned"] == f]
                per_pair: dict[tuple, list[float]] = {}
                for r in sel:
                    per_pair.setdefault((r["seed"], r["pair"]), []).append(r[metric])
                panels[title][label] = [float(np.mean(v)) for v in per_pair.values()]
        box_plots(out / "boxplot.png", panels, "Registration of test pairs (class means)")
    return table
