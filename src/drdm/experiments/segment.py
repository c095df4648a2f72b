"""Few-shot segmentation with augmentation (paper Section 4, Table 2).

For every seed: choose the labelled training subjects, make ``copies`` augmented copies of each
training image offline per method (Algorithm 3, :mod:`drdm.experiments.augment`), train the
2D U-Net of paper 4.1 with the BCE loss of Eq. 17 (Adam, exponential learning-rate decay) on the
originals plus the copies for the same number of steps, and evaluate it on the held-out images:
per class DSC, sensitivity, precision, average surface distance and 95 % Hausdorff distance (mm).
Within a seed every method starts from the same network weights and draws the same sequence of
batch positions, so methods differ only by their augmented copies.

Outputs in the result folder: ``config.yaml``, ``results.csv`` (one row per seed, method, test
image and class), ``summary.csv``, ``table.md`` (Table-2 style, with the setting stated) and box
plots ``boxplot_dsc.png`` / ``boxplot_hd95.png``, and ``examples.png`` (the first training
image of the first seed and its first augmented copies per method).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import save_config
from ..errors import InputError
from ..seeding import key_generator
from .augment import AugmentationSpec, Augmenter, parse_method
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
from .config import SegmentationConfig
from .datasets import (
    CARDIAC_CLASSES,
    LabelledImage,
    cardiac_phantoms,
    read_acdc,
    stack_items,
)
from .losses import segmentation_bce
from .report import box_plots, example_grid, mean_std, pm, write_csv, write_text
from .unet import segmentation_unet

__all__ = ["SegmentationResult", "predict_masks", "run_segmentation", "train_segmenter"]

METRICS = ("dsc", "sensitivity", "precision", "asd_mm", "hd95_mm")
COLUMNS = ("seed", "method", "image", "class", *METRICS)


SegmentationResult = ExperimentResult  # rows, out_dir, table, seconds


# ------------------------------------------------------------------------------ data
def _classes_of(items: list[LabelledImage]) -> dict[int, str]:
    values = sorted({int(v) for it in items for v in np.unique(it.label) if v != 0})
    if set(values) <= set(CARDIAC_CLASSES):
        return {v: CARDIAC_CLASSES[v] for v in values}
    return {v: f"class {v}" for v in values}


def _load_data(cfg: SegmentationConfig) -> ExperimentData:
    if cfg.data == "phantoms":
        test = cardiac_phantoms(
            cfg.test_subjects, cfg.image_size, cfg.data_seed, cfg.phantom_fov_mm, prefix="test"
        )
        desc = (
            f"built-in cardiac phantoms (drdm.data.phantoms.cardiac_phantom_2d, "
            f"{cfg.phantom_fov_mm:g} mm field of view); test images from seed {cfg.data_seed}, "
            f"training images drawn anew for every seed"
        )
        return ExperimentData(test, [], dict(CARDIAC_CLASSES), desc, "phantoms")
    items = read_acdc(cfg.data, cfg.image_size)
    if cfg.test_data is not None:
        test = read_acdc(cfg.test_data, cfg.image_size)
        pool = items
    else:
        num_test = cfg.test_subjects if cfg.test_subjects > 0 else None
        pool, test = split_pool(items, num_test, cfg.data_seed)
    classes = _classes_of(items + test)
    desc = f"ACDC-style folder `{cfg.data}`" + (
        f" (test subjects from `{cfg.test_data}`)" if cfg.test_data else ""
    )
    return ExperimentData(test, pool, classes, desc, None)


def _train_items(cfg: SegmentationConfig, data: ExperimentData, seed: int) -> list[LabelledImage]:
    if data.phantoms is not None:
        if cfg.train_fraction is not None:
            raise InputError("train_fraction needs a dataset folder (phantoms have no pool)")
        return train_phantoms(
            data.phantoms,
            cfg.train_subjects,
            cfg.image_size,
            cfg.data_seed,
            seed,
            cfg.phantom_fov_mm,
        )
    if cfg.train_fraction is not None:
        subjects = {it.subject for it in data.train_pool}
        n = max(1, round(cfg.train_fraction * len(subjects)))
    else:
        n = cfg.train_subjects
    return choose_from_pool(data.train_pool, n, seed)


# ------------------------------------------------------------------------------ training
def _onehot(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """``(N, 1, *spatial)`` int labels -> ``(N, C, *spatial)`` float one-hot of ``classes``."""
    return torch.cat([(labels == c).float() for c in classes], dim=1)


def train_segmenter(
    images: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    lr_decay: float,
    widths: tuple[int, ...],
    init_generator: torch.Generator,
    batch_generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.nn.Module, list[float]]:
    """Train the 2D U-Net of paper 4.1 with the BCE of Eq. 17.

    Args:
        images: ``(N, 1, H, W)`` training pool (float, ``[0, 1]``).
        targets: ``(N, C, H, W)`` one-hot masks of the ``C`` foreground classes.
        steps, batch_size: optimisation steps; each draws ``batch_size`` pool indices
            uniformly with ``batch_generator``.
        lr, lr_decay: Adam learning rate, multiplied by ``lr_decay`` over the run
            (exponential schedule, ``gamma = lr_decay ** (1 / steps)`` per step).

    Returns the trained network (eval mode) and the loss of every step.
    """
    net = segmentation_unet(targets.shape[1], widths, generator=init_generator).to(device)
    images, targets = images.to(device), targets.to(device)

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=batch_generator)
        idx = idx.to(device)
        return segmentation_bce(net(images[idx]), targets[idx])

    losses = train_with_adam(net, steps, lr, batch_loss, lr_decay=lr_decay)
    return net.eval(), losses


@torch.no_grad()
def predict_masks(
    net: torch.nn.Module, images: torch.Tensor, threshold: float = 0.5, chunk: int = 32
) -> torch.Tensor:
    """Binary masks ``(N, C, *spatial)`` (bool, CPU): ``sigmoid(net(images)) > threshold``."""
    device = next(net.parameters()).device
    out = []
    for part in images.split(chunk):
        out.append((torch.sigmoid(net(part.to(device))) > threshold).cpu())
    return torch.cat(out)


def _evaluate(
    masks: torch.Tensor,
    test: list[LabelledImage],
    classes: dict[int, str],
) -> list[dict[str, Any]]:
    from .. import metrics

    rows = []
    for n, item in enumerate(test):
        for c, (value, name) in enumerate(classes.items()):
            pred = masks[n, c].numpy()
            gt = item.label == value
            rows.append(
                {
                    "image": item.name,
                    "class": name,
                    "dsc": metrics.dice(pred, gt, labels=1),
                    "sensitivity": metrics.sensitivity(pred, gt, labels=1),
                    "precision": metrics.precision(pred, gt, labels=1),
                    "asd_mm": metrics.average_surface_distance(
                        pred, gt, labels=1, spacing=item.spacing
                    ),
                    "hd95_mm": metrics.hausdorff95(pred, gt, labels=1, spacing=item.spacing),
                }
            )
    return rows


def _augmented_pool(
    augmenter: Augmenter | None,
    items: list[LabelledImage],
    copies: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = stack_items(items)
    if augmenter is None or copies == 0:
        return images, labels
    extra_images, extra_labels = [], []
    for i in range(len(items)):
        for k in range(copies):
            img, lab = augmenter.copy(images[i, 0], labels[i, 0], seed, i, k)
            extra_images.append(img.float())
            extra_labels.append(lab.long())
    return (
        torch.cat([images, torch.stack(extra_images)[:, None]]),
        torch.cat([labels, torch.stack(extra_labels)[:, None]]),
    )


# ------------------------------------------------------------------------------ report
def _averaged_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (seed, method, image): the mean over classes of every metric (class 'Average')."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["seed"], r["method"], r["image"]), []).append(r)
    out = []
    for (seed, method, image), rs in groups.items():
        avg = {"seed": seed, "method": method, "image": image, "class": "Average"}
        for m in METRICS:
            values = np.array([r[m] for r in rs], dtype=np.float64)
            # ratios: mean over the classes where defined; distances: inf stays inf
            nan_ok = m in ("sensitivity", "precision") and not np.isnan(values).all()
            avg[m] = float(np.nanmean(values) if nan_ok else values.mean())
        out.append(avg)
    return out


def _summary_rows(rows: list[dict[str, Any]], methods: list[str], classes: list[str]) -> list:
    out = []
    seeds = sorted({r["seed"] for r in rows})
    for method in methods:
        for cls in classes:
            sel = [r for r in rows if r["method"] == method and r["class"] == cls]
            if not sel:
                continue
            row: dict[str, Any] = {"method": method, "class": cls, "n": len(sel)}
            for m in METRICS:
                mean, std, _, bad = mean_std(r[m] for r in sel)
                seed_means = [mean_std(r[m] for r in sel if r["seed"] == s)[0] for s in seeds]
                row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_nonfinite"] = mean, std, bad
                row[f"{m}_seed_std"] = mean_std(seed_means)[1] if len(seeds) > 1 else 0.0
            out.append(row)
    return out


def _table(
    cfg: SegmentationConfig,
    rows: list[dict[str, Any]],
    methods: list[str],
    classes: list[str],
    header: str,
) -> str:
    order = [c for c in ("LV", "RV", "Myo") if c in classes] + [
        c for c in classes if c not in ("LV", "RV", "Myo")
    ]
    cols = [*order, "Average"]
    lines = [header, ""]
    lines.append(
        "DSC, sensitivity (sns) and precision (prec) in %, mean ± std over the test images of "
        "all seeds:"
    )
    lines.append("")
    head = "| method | " + " | ".join(f"{c} dsc | {c} sns | {c} prec" for c in cols) + " |"
    lines += [head, "|" + "---|" * (1 + 3 * len(cols))]
    for method in methods:
        cells = []
        for c in cols:
            sel = [r for r in rows if r["method"] == method and r["class"] == c]
            for m in ("dsc", "sensitivity", "precision"):
                cells.append(pm((r[m] for r in sel), 100.0))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Surface distances in mm (ASD, HD95), mean ± std over the test images:", ""]
    head = "| method | " + " | ".join(f"{c} ASD | {c} HD95" for c in cols) + " |"
    lines += [head, "|" + "---|" * (1 + 2 * len(cols))]
    for method in methods:
        cells = []
        for c in cols:
            sel = [r for r in rows if r["method"] == method and r["class"] == c]
            for m in ("asd_mm", "hd95_mm"):
                cells.append(pm((r[m] for r in sel), 1.0, 2))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in rows})
    lines += [
        "",
        f"Over seeds ({len(seeds)}): mean ± std of the per-seed means (average over classes); "
        f"ΔDSC: the per-seed difference to `{methods[0]}` (same training images, same initial "
        "network and batch order), mean ± standard error; then the per-seed average DSC (%):",
        "",
        f"| method | DSC | ΔDSC vs {methods[0]} | ASD (mm) | HD95 (mm) | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |",
        "|" + "---|" * (5 + len(seeds)),
    ]

    def seed_means(method: str, metric: str) -> list[float]:
        sel = [r for r in rows if r["method"] == method and r["class"] == "Average"]
        return [mean_std(r[metric] for r in sel if r["seed"] == s)[0] for s in seeds]

    reference = seed_means(methods[0], "dsc")
    for method in methods:
        per_seed = {m: seed_means(method, m) for m in ("dsc", "asd_mm", "hd95_mm")}
        diff = np.array(per_seed["dsc"]) - np.array(reference)
        mean_d, std_d, n_d, _ = mean_std(diff)
        delta = (
            f"{100 * mean_d:+.1f} ± {100 * std_d / np.sqrt(max(n_d - 1, 1)):.1f}"
            if n_d > 1
            else (f"{100 * mean_d:+.1f}" if n_d else "n/a")
        )
        cells = [
            pm(per_seed["dsc"], 100.0),
            delta,
            pm(per_seed["asd_mm"], 1.0, 2),
            pm(per_seed["hd95_mm"], 1.0, 2),
            *(f"{v * 100:.1f}" for v in per_seed["dsc"]),
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "†k: k cases left out of a distance mean because the predicted (or true) mask was empty "
        "(no surface, distance infinite); such a case scores DSC 0.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main
def _method_specs(cfg: SegmentationConfig) -> list[AugmentationSpec]:
    """The augmentation methods of ``cfg`` (a one-line error when one repeats)."""
    specs: list[AugmentationSpec] = [parse_method(m, cfg.drdm_levels) for m in cfg.methods]
    names = [s.text for s in specs]
    if len(set(names)) != len(names):
        raise InputError(f"methods repeat: {', '.join(names)}")
    return specs


@dataclass
class _MethodRun:
    """One method trained and tested on one seed's training images."""

    rows: list[dict[str, Any]]
    pool_size: int
    seconds_augment: float
    seconds: float
    final_loss: float
    examples: list[tuple[np.ndarray, np.ndarray]]


def _run_method(
    cfg: SegmentationConfig,
    spec: AugmentationSpec,
    augmenter: Augmenter | None,
    train: list[LabelledImage],
    seed: int,
    data: ExperimentData,
    test_images: torch.Tensor,
    device: torch.device,
) -> _MethodRun:
    """Augment the training images with one method, train a segmenter on the pool and
    evaluate it on the test images (rows per test image and class)."""
    classes = data.classes
    t0 = time.perf_counter()
    images, labels = _augmented_pool(augmenter, train, cfg.copies, seed)
    t_aug = time.perf_counter() - t0
    n = len(train)
    shown = [0, *range(n, min(n + 5, images.shape[0]))]  # the first image and its first copies
    examples = [(images[i, 0].numpy(), labels[i, 0].numpy()) for i in shown]
    net, losses = train_segmenter(
        images,
        _onehot(labels, list(classes)),
        cfg.steps,
        cfg.batch_size,
        cfg.lr,
        cfg.lr_decay,
        cfg.widths,
        key_generator("segmentation-init", seed),
        key_generator("segmentation-batches", seed),
        device,
    )
    masks = predict_masks(net, test_images, cfg.threshold)
    rows = [{"seed": seed, "method": spec.text, **r} for r in _evaluate(masks, data.test, classes)]
    return _MethodRun(
        rows=rows,
        pool_size=int(images.shape[0]),
        seconds_augment=t_aug,
        seconds=time.perf_counter() - t0,
        final_loss=float(np.mean(losses[-20:])),
        examples=examples,
    )


def run_segmentation(
    cfg: SegmentationConfig,
    out_dir: str | Path,
    model: Any | None = None,
    log: Any = print,
) -> SegmentationResult:
    """Run the segmentation experiment described by ``cfg`` and write its result folder.

    ``model``: a :class:`~drdm.DRDM` to use for ``drdm`` methods instead of loading
    ``cfg.model``. ``log``: a ``print``-like callable for progress (``None``: silent).
    """
    from ..device import resolve_device

    cfg.validate()
    info = RunInfo(log)
    out = check_out_dir(out_dir)
    device = resolve_device(cfg.device)
    threads = set_threads(cfg.threads)
    specs = _method_specs(cfg)
    names = [s.text for s in specs]
    data = _load_data(cfg)
    if any(s.base == "drdm" for s in specs) and model is None:
        model = load_model(cfg.model, device)
    classes = data.classes
    save_config(cfg, out / "config.yaml")
    info.say(
        f"segmentation: {len(specs)} method(s) x {len(cfg.seeds)} seed(s), "
        f"{len(data.test)} test images, classes {list(classes.values())}"
    )
    cache: dict = {}
    augmenters = {
        s.text: (Augmenter(s, 2, model=model, field_cache=cache) if s.augments else None)
        for s in specs
    }
    rows: list[dict[str, Any]] = []
    timings: dict[str, list[float]] = {s.text: [] for s in specs}
    test_images, _ = stack_items(data.test)
    n_train_images: list[int] = []
    examples: dict[str, list] = {}

    def write_outputs(final: bool) -> str:
        """Rewrite table, CSV and plots from the rows so far (after every trained model)."""
        return _write_outputs(
            cfg,
            out,
            rows,
            names,
            classes,
            data,
            model,
            threads,
            device,
            info,
            n_train_images,
            timings,
            final=final,
        )

    for seed in cfg.seeds:
        train = _train_items(cfg, data, seed)
        n_train_images.append(len(train))
        for spec in specs:
            run = _run_method(
                cfg, spec, augmenters[spec.text], train, seed, data, test_images, device
            )
            if seed == cfg.seeds[0]:  # for a figure
                examples[spec.text] = run.examples
            rows += run.rows
            timings[spec.text].append(run.seconds)
            dsc = np.mean([r["dsc"] for r in run.rows])
            info.say(
                f"seed {seed} {spec.text}: pool {run.pool_size} images (augmentation "
                f"{run.seconds_augment:.0f} s), final loss {run.final_loss:.4f}, "
                f"mean DSC {100 * dsc:.1f} %, {run.seconds:.0f} s"
            )
            write_outputs(final=False)
    table = write_outputs(final=True)
    example_grid(
        out / "examples.png",
        examples,
        f"seed {cfg.seeds[0]}: first training image (left) and its first augmented copies",
    )
    return SegmentationResult(rows=rows, out_dir=out, table=table, seconds=info.elapsed())


def _write_outputs(
    cfg: SegmentationConfig,
    out: Path,
    rows: list[dict[str, Any]],
    names: list[str],
    classes: dict[int, str],
    data: ExperimentData,
    model: Any,
    threads: int,
    device: torch.device,
    info: RunInfo,
    n_train_images: list[int],
    timings: dict[str, list[float]],
    final: bool,
) -> str:
    all_rows = rows + _averaged_rows(rows)
    class_names = list(classes.values())
    write_csv(out / "results.csv", rows, COLUMNS)
    summary = _summary_rows(all_rows, names, [*class_names, "Average"])
    summary_cols = ["method", "class", "n"] + [
        f"{m}_{s}" for m in METRICS for s in ("mean", "std", "seed_std", "nonfinite")
    ]
    write_csv(out / "summary.csv", summary, summary_cols)
    seeds_done = sorted({r["seed"] for r in rows})
    n_train = (
        f"{cfg.train_subjects} labelled subject(s) per seed"
        if cfg.train_fraction is None
        else f"{100 * cfg.train_fraction:g} % of the training subjects per seed"
    )
    model_line = describe_model(cfg.model, model) if model is not None else "not used"
    per_method = ", ".join(f"{k} {np.mean(v):.0f} s" for k, v in timings.items() if v)
    header = "\n".join(
        [
            f"**Segmentation experiment** ({'final' if final else 'partial'}: "
            f"{len(seeds_done)} of {len(cfg.seeds)} seeds).",
            "",
            f"- data: {data.description}; image size {cfg.image_size} x {cfg.image_size}",
            f"- training: {n_train} ({'/'.join(map(str, sorted(set(n_train_images))))} "
            "image(s) per seed); "
            f"{cfg.copies} augmented copies per image (offline, Algorithm 3); test: "
            f"{len(data.test)} held-out images; classes {', '.join(class_names)}",
            f"- seeds {', '.join(map(str, seeds_done))} (one training per seed and method, "
            f"no other repeats); {cfg.steps} steps, batch {cfg.batch_size}, Adam lr "
            f"{cfg.lr:g} decayed x{cfg.lr_decay:g} (exponential), U-Net widths "
            f"{list(cfg.widths)}, threshold {cfg.threshold:g}",
            f"- DRDM model: {model_line}; levels of `drdm`: {list(cfg.drdm_levels)}",
            f"- machine: {machine_line(device)}; threads {threads}",
            f"- wall time {info.elapsed():.0f} s (mean per seed and method: {per_method})",
        ]
    )
    table = _table(cfg, all_rows, names, class_names, header)
    write_text(out / "table.md", table)
    if final:
        panels = {
            c: {
                m: [r["dsc"] for r in all_rows if r["method"] == m and r["class"] == c]
                for m in names
            }
            for c in [*class_names, "Average"]
        }
        box_plots(
            out / "boxplot_dsc.png",
            panels,
            "DSC over test images and seeds",
            {class_names[0]: "DSC"},
        )
        panels = {
            c: {
                m: [r["hd95_mm"] for r in all_rows if r["method"] == m and r["class"] == c]
                for m in names
            }
            for c in [*class_names, "Average"]
        }
        box_plots(
            out / "boxplot_hd95.png",
            panels,
            "HD95 (mm) over test images and seeds",
            {class_names[0]: "HD95 (mm)"},
        )
    return table
