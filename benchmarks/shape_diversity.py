"""Shape diversity: how much non-rigid change at organ scale each deformation method makes.

For every deformed label map, the best affine fit of the map from the deformed organ to the
original one is removed (:func:`drdm.metrics.nonrigid_residual`, least squares over the
deformed organ's voxels) and what the affine cannot explain is reported, per organ, in % of the
organ's diameter and in voxels; beside it the plain magnitude statistics (mean/max ``|u|`` in
% of the image size, fold %) and the spatial scale of the fields (radially averaged power
spectrum of the displacement, correlation length).

Methods: DRDM's random forward field ``phi_{T':1}`` alone (the field the recovery starts from,
drawn by the model's own process: :mod:`drdm.diffusion` for the packaged default model, the
authors' process for their checkpoint), DRDM after recovery (``DRDM.generate`` with
``stride=1``, the literal Algorithm 2), the plain elastic deformation, BigAug's geometry
(rotation, scaling, elastic) and MRBS, at DRDM's default levels 32 and 48 (of T = 80) and,
for elastic and MRBS, also scaled to the mean ``|u|`` of the default model's recovered fields
at each level. Data: built-in 2D cardiac phantoms (labels: RV cavity, LV myocardium, LV cavity)
and, for image-level measures only (no label), the real M&Ms slice of ``../shared``.

The authors' checkpoint runs on a 256 x 256 grid and is slow on one CPU thread, so the run is
split in parts written to JSON and merged (each part stays under ~5 minutes on one thread):

    export OMP_WAIT_POLICY=PASSIVE
    python benchmarks/shape_diversity.py --methods fast --drdm-samples 8 --json /tmp/sd_fast.json
    python benchmarks/shape_diversity.py --methods official --images phantoms \
        --json /tmp/sd_off_ph.json --official /tmp/official_diag
    python benchmarks/shape_diversity.py --methods official --images real \
        --official-samples 3 --json /tmp/sd_off_real.json --official /tmp/official_diag
    python benchmarks/shape_diversity.py --merge /tmp/sd_fast.json /tmp/sd_off_ph.json \
        /tmp/sd_off_real.json --figure docs/figures/shape_diversity.png

(``/tmp/official_diag`` is made by ``drdm import-official
../shared/data/official_drdm/cmr_recresacnet_000000.pth /tmp/official_diag``; never copy those
weights into the repository.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from drdm import DRDM
from drdm.baselines import ElasticSampler
from drdm.data.phantoms import cardiac_phantom_2d
from drdm.diffusion import ForwardDiffusionConfig
from drdm.io import read_volume
from drdm.metrics import displacement_magnitude, fold_ratio, nonrigid_residual
from drdm.pipelines import make_method
from drdm.spatial import smooth, warp_labels

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/samples/mnms_OpenDataset_162867.nii.gz"
)
ORGANS = {"RV": (1,), "Myo": (2,), "LV": (3,), "heart": (1, 2, 3)}
LEVELS = (32, 48)
#: spectrum bins kept: integer radial frequency k = 1..K cycles per image (wavelength N / k)
K_BINS = 32
#: window side for the label-free organ-scale measure, as a fraction of the image
WINDOW = 0.125
#: Gaussian splitting a field into organ-scale (low-pass) and sub-organ (high-pass) parts,
#: standard deviation as a fraction of the image (5 voxels of 128, a quarter of the LV diameter)
SPLIT_SIGMA = 0.04

Field = torch.Tensor  # (B, 2, H, W) voxels, pull-back


# ---------------------------------------------------------------- measures of one field
def spectrum(u: np.ndarray) -> np.ndarray:
    """Radially averaged power of a ``(2, H, W)`` field (mean removed, Hann window), summed over
    components, at integer radial frequencies ``k = 1..K_BINS`` cycles per image; normalised
    to sum 1 over those bins."""
    h, w = u.shape[1:]
    win = np.outer(np.hanning(h), np.hanning(w))
    f = np.fft.fft2((u - u.mean(axis=(1, 2), keepdims=True)) * win, axes=(1, 2))
    power = (np.abs(f) ** 2).sum(axis=0)
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    k = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)).astype(int)
    out = np.array([power[k == i].mean() for i in range(1, K_BINS + 1)])
    total = out.sum()
    return out / total if total > 0 else np.full(K_BINS, np.nan)


def correlation_length(u: np.ndarray) -> float:
    """Lag (in % of the image size) at which the radially averaged autocorrelation of the
    mean-removed field first falls below 1/e (zero-padded FFT, no wrap-around)."""
    h, w = u.shape[1:]
    v = u - u.mean(axis=(1, 2), keepdims=True)
    f = np.fft.rfft2(v, s=(2 * h, 2 * w), axes=(1, 2))
    ac = np.fft.irfft2(np.abs(f) ** 2, s=(2 * h, 2 * w), axes=(1, 2)).sum(axis=0)
    ones = np.fft.rfft2(np.ones((h, w)), s=(2 * h, 2 * w))
    overlap = np.fft.irfft2(np.abs(ones) ** 2, s=(2 * h, 2 * w))
    ac = ac / np.maximum(overlap, 1.0)  # unbiased: mean product per overlapping pair
    ky = np.fft.fftfreq(2 * h) * 2 * h
    kx = np.fft.fftfreq(2 * w) * 2 * w
    r = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)).astype(int)
    rmax = min(h, w) // 2
    radial = np.array([ac[r == i].mean() for i in range(rmax + 1)])
    below = np.nonzero(radial / radial[0] < 1 / math.e)[0]
    lag = float(below[0]) if below.size else float(rmax)
    return 100.0 * lag / max(h, w)


def window_residual(u: np.ndarray, image: np.ndarray) -> float:
    """Mean non-affine residual (% of the window's diameter) over square windows of side
    ``WINDOW`` of the image tiled over it, keeping windows at least half in the foreground
    (intensity > 0.05): a label-free organ-scale measure."""
    n = u.shape[1]
    side = max(4, round(WINDOW * n))
    values = []
    for i in range(0, n - side + 1, side):
        for j in range(0, u.shape[2] - side + 1, side):
            if (image[i : i + side, j : j + side] > 0.05).mean() < 0.5:
                continue
            mask = np.zeros(u.shape[1:], bool)
            mask[i : i + side, j : j + side] = True
            values.append(nonrigid_residual(u, mask).percent)
    return float(np.mean(values))


def affine_dice_loss(
    label: torch.Tensor, warped: torch.Tensor, affine: np.ndarray, k: tuple
) -> float:
    """``1 - Dice`` between the deformed organ and the original organ moved by the fitted
    affine map alone: the shape change an affine augmentation could not make."""
    h, w = label.shape
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).astype(np.float64)
    mapped = np.einsum("ij,j...->i...", affine[:, :2], grid) + affine[:, 2, None, None]
    ddf = torch.as_tensor(mapped - grid, dtype=torch.float32)[None]
    moved = warp_labels(label[None, None], ddf)[0, 0]
    a = torch.isin(moved, torch.tensor(k)).numpy()
    b = torch.isin(warped, torch.tensor(k)).numpy()
    denom = a.sum() + b.sum()
    return 1.0 - (2.0 * (a & b).sum() / denom if denom else 1.0)


def measure(u: torch.Tensor, image: np.ndarray, label: torch.Tensor | None) -> dict[str, object]:
    """All measures of one ``(2, H, W)`` field."""
    mag = displacement_magnitude(u)
    arr = u.double().numpy()
    row: dict[str, object] = {
        "mean_pct": mag.mean_percent,
        "max_pct": mag.max_percent,
        "mean_vox": mag.mean,
        "fold_pct": 100.0 * fold_ratio(u),
        "image_affine_pct": nonrigid_residual(arr, np.ones(arr.shape[1:], bool)).mean
        / max(arr.shape[1:])
        * 100.0,
        "window_pct": window_residual(arr, image),
        "corr_pct": correlation_length(arr),
        "spectrum": spectrum(arr).tolist(),
    }
    if label is not None:
        warped = warp_labels(label[None, None], u[None].float())[0, 0]
        sig = SPLIT_SIGMA * max(arr.shape[1:])
        low = smooth(u[None].double(), [sig, sig])[0].numpy()
        organs = {}
        for name, k in ORGANS.items():
            mask = torch.isin(warped, torch.tensor(k)).numpy()
            res = nonrigid_residual(arr, mask)
            organs[name] = {
                "pct": res.percent,
                "vox": res.mean,
                "size": res.size,
                "dice_loss": affine_dice_loss(label, warped, res.affine, k),
                "low_pct": nonrigid_residual(low, mask).percent,
                "high_pct": nonrigid_residual(arr - low, mask).percent,
            }
        row["organs"] = organs
    return row


# ---------------------------------------------------------------- data and methods
def load_images(which: str, size: int, seeds: list[int]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    if which in ("phantoms", "all"):
        for s in seeds:
            p = cardiac_phantom_2d(size, generator=s)
            out.append(
                {
                    "name": f"phantom{s}",
                    "image": torch.as_tensor(p.image, dtype=torch.float32),
                    "label": torch.as_tensor(p.label),
                }
            )
    if which in ("real", "all") and DEFAULT_IMAGE.is_file():
        arr = read_volume(DEFAULT_IMAGE).array
        out.append(
            {
                "name": "mnms",
                "image": torch.as_tensor(np.asarray(arr), dtype=torch.float32),
                "label": None,
            }
        )
    return out


def image_number(img: dict) -> int:
    """A number per image for its seeds: the phantom's seed + 1, 0 for the real slice."""
    name = str(img["name"])
    return int(name[len("phantom") :]) + 1 if name.startswith("phantom") else 0


def drdm_fields(
    model: DRDM, image: torch.Tensor, level: int, n: int, seed: int
) -> tuple[Field, Field]:
    """(forward ``phi_{T':1}``, recovered ``phi``) for ``n`` samples at stride 1."""
    out = model.generate(
        image[None, None],
        level,
        num_samples=n,
        generator=torch.Generator().manual_seed(seed),
        stride=1,
        normalize=True,
    )
    return out.initial_ddf.float(), out.ddf.float()


def sampler_fields(sampler: object, image: torch.Tensor, n: int, seed: int) -> Field:
    images = image[None, None].expand(n, 1, *image.shape).contiguous()
    return sampler.sample_ddf(images, torch.Generator().manual_seed(seed)).float()


def mean_pct(fields: Field) -> float:
    return float(np.mean(displacement_magnitude(fields, batched=True).mean_percent))


def run(args: argparse.Namespace) -> tuple[list[dict], dict[str, list]]:
    images = load_images(args.images, args.size, args.seeds)
    rows: list[dict] = []
    examples: dict[str, list] = {}

    def record(method: str, setting: str, img: dict, fields: Field) -> None:
        for i, u in enumerate(fields):
            r = measure(u, img["image"].numpy(), img["label"])
            rows.append({"method": method, "setting": setting, "image": img["name"], "i": i, **r})
        key = f"{method} | {setting}"
        if img["name"] == "phantom0" and key not in examples:
            examples[key] = np.round(fields[0].numpy(), 3).tolist()

    def timed(what: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        fn()
        print(f"  {what}: {time.perf_counter() - t0:.1f} s", flush=True)

    models = []
    if args.methods in ("fast", "all"):
        models.append(("DRDM default", DRDM.from_pretrained("default"), args.drdm_samples))
    if args.methods in ("official", "all"):
        models.append(("DRDM authors'", DRDM.from_pretrained(args.official), args.official_samples))
    targets: dict[int, list[float]] = defaultdict(list)
    for name, model, n in models:
        for img in images:
            for level in LEVELS:
                # every image gets its own draws (the forward field does not depend on it)
                seed = args.seed + level + 1000 * image_number(img)

                def go(
                    model: DRDM = model,
                    img: dict = img,
                    level: int = level,
                    name: str = name,
                    n: int = n,
                    seed: int = seed,
                ) -> None:
                    fwd, rec = drdm_fields(model, img["image"], level, n, seed)
                    record(f"{name} forward", f"T'={level}", img, fwd)
                    record(f"{name} recovered", f"T'={level}", img, rec)
                    if name == "DRDM default":
                        targets[level].append(mean_pct(rec))

                timed(f"{name} {img['name']} T'={level} ({n} samples, seed {seed})", go)
    if args.methods in ("fast", "all"):
        n = args.baseline_samples
        for img in images:
            ref_elastic = mean_pct(sampler_fields(ElasticSampler(2), img["image"], 32, 999))
            ref_mrbs = mean_pct(sampler_fields(make_method("mrbs", 2)[0], img["image"], 32, 999))
            settings: list[tuple[str, str, object]] = [
                ("elastic", "default", ElasticSampler(2)),
                ("MRBS", "default", make_method("mrbs", 2)[0]),
                ("BigAug geometry", "default", make_method("bigaug", 2)[0]),
            ]
            for level in LEVELS:
                if not targets[level]:
                    continue
                goal = float(np.mean(targets[level]))
                a = 0.015 * goal / ref_elastic
                scale = goal / ref_mrbs
                d = tuple(scale * x for x in (0.06, 0.03, 0.015))
                settings.append(
                    ("elastic", f"matched T'={level} (alpha {a:.4f})", ElasticSampler(2, alpha=a))
                )
                settings.append(
                    (
                        "MRBS",
                        f"matched T'={level} (x{scale:.2f})",
                        make_method("mrbs", 2, max_displacements=d)[0],
                    )
                )
            for k, (method, setting, sampler) in enumerate(settings):
                seed = args.seed + 100 + k + 1000 * image_number(img)
                fields = sampler_fields(sampler, img["image"], n, seed)
                record(method, setting, img, fields)
    return rows, examples


# ---------------------------------------------------------------- tables and figure
def _ms(values: list[float], digits: int = 2) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def groups(rows: list[dict], phantoms: bool) -> dict[tuple[str, str], list[dict]]:
    """Rows by (method, setting), DRDM first, for the phantoms or the real slice."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if (r["image"] != "mnms") == phantoms:
            out[(r["method"], r["setting"])].append(r)
    order = ["DRDM default", "DRDM authors'", "elastic", "MRBS", "BigAug"]

    def rank(key: tuple[str, str]) -> tuple[int, str, str]:
        first = next(i for i, m in enumerate(order + [""]) if key[0].startswith(m))
        return first, key[1].replace("default", ""), key[0]

    return {k: out[k] for k in sorted(out, key=rank)}


def tables(rows: list[dict]) -> None:
    for phantoms, title in ((True, "cardiac phantoms"), (False, "real M&Ms slice (no label)")):
        g = groups(rows, phantoms)
        if not g:
            continue
        images = sorted({r["image"] for rs in g.values() for r in rs})
        print(f"\n### Magnitude and spatial scale: {title} ({', '.join(images)})\n")
        print(
            "| method | setting | n | mean \\|u\\| % | max \\|u\\| % | fold % "
            "| image-affine residual % | organ-window residual % | energy at λ ≤ 25 % "
            "| correlation length % |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (method, setting), rs in g.items():
            spec = np.nanmean([r["spectrum"] for r in rs], axis=0)
            short = float(spec[3:].sum())  # k >= 4 cycles per image
            print(
                f"| {method} | {setting} | {len(rs)} | {_ms([r['mean_pct'] for r in rs])} "
                f"| {_ms([r['max_pct'] for r in rs])} | {_ms([r['fold_pct'] for r in rs], 3)} "
                f"| {_ms([r['image_affine_pct'] for r in rs], 3)} "
                f"| {_ms([r['window_pct'] for r in rs], 3)} | {short:.3f} "
                f"| {_ms([r['corr_pct'] for r in rs], 1)} |"
            )
        if not phantoms:
            continue
        print(f"\n### Non-affine residual per organ: {title}\n")
        print(
            "Mean residual after the organ's best affine fit: % of the organ diameter "
            "(voxels of the 128 x 128 grid); last column 1 − Dice between the deformed organ "
            "and the original moved by that affine, mean over RV, Myo, LV (%).\n"
        )
        print(
            "| method | setting | RV | Myo | LV | heart | residual per 1 % mean \\|u\\| (LV) "
            "| 1 − Dice vs affine % |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for (method, setting), rs in g.items():
            cells = []
            for organ in ORGANS:
                pct = [r["organs"][organ]["pct"] for r in rs]
                vox = [r["organs"][organ]["vox"] for r in rs]
                cells.append(f"{np.mean(pct):.2f} ± {np.std(pct):.2f} ({np.mean(vox):.2f})")
            per = np.mean([r["organs"]["LV"]["pct"] for r in rs]) / np.mean(
                [r["mean_pct"] for r in rs]
            )
            dl = np.mean(
                [np.mean([r["organs"][o]["dice_loss"] for o in ("RV", "Myo", "LV")]) for r in rs]
            )
            print(f"| {method} | {setting} | {' | '.join(cells)} | {per:.3f} | {100 * dl:.2f} |")
        print(
            f"\n### Organ-scale bending vs sub-organ wiggles: {title}\n\nThe field split by a "
            f"Gaussian of sigma {SPLIT_SIGMA:.0%} of the image into a low-pass part (bending at "
            "organ scale) and the rest (wiggles shorter than about a quarter of an LV); "
            "non-affine residual of each part over the organ, % of the organ diameter.\n"
        )
        print(
            "| method | setting | RV low / high | Myo low / high | LV low / high "
            "| heart low / high |"
        )
        print("|---|---|---|---|---|---|")
        for (method, setting), rs in g.items():
            cells = [
                f"{np.mean([r['organs'][o]['low_pct'] for r in rs]):.2f} / "
                f"{np.mean([r['organs'][o]['high_pct'] for r in rs]):.2f}"
                for o in ORGANS
            ]
            print(f"| {method} | {setting} | {' | '.join(cells)} |")
        sizes = {
            o: np.mean([r["organs"][o]["size"] for rs in g.values() for r in rs]) for o in ORGANS
        }
        print(
            "\nmean organ diameters (voxels of 128): "
            + ", ".join(f"{o} {s:.1f}" for o, s in sizes.items())
        )


def figure(rows: list[dict], examples: dict[str, list], path: Path, size: int) -> None:
    from drdm.viz import pyplot, save_figure

    plt = pyplot()
    fig = plt.figure(figsize=(15, 10))
    gs = fig.add_gridspec(2, 6, height_ratios=(1.25, 1))
    g = groups(rows, True)
    keys = [k for k in g if "T'=48" in k[1] or k[1] == "default"]
    # (a) spectra
    ax = fig.add_subplot(gs[0, :2])
    k = np.arange(1, K_BINS + 1)
    for key in keys:
        spec = np.nanmean([r["spectrum"] for r in g[key]], axis=0)
        style = "--" if "forward" in key[0] else "-"
        ax.loglog(100.0 / k, spec, style, label=f"{key[0]} ({key[1].split(' (')[0]})")
    ax.axvspan(15, 35, color="0.9", zorder=0)
    ax.text(34, 1e-9, "organ\ndiameters", fontsize=8)
    ax.invert_xaxis()
    ax.set_xlabel("wavelength (% of image)")
    ax.set_ylabel("share of displacement energy")
    ax.set_title("(a) radially averaged power spectrum (phantoms)")
    ax.legend(fontsize=6)
    # (b) organ residuals
    ax = fig.add_subplot(gs[0, 2:])
    bars = list(g)
    width = 0.8 / len(ORGANS)
    for j, organ in enumerate(ORGANS):
        vals = [np.mean([r["organs"][organ]["pct"] for r in g[key]]) for key in bars]
        errs = [np.std([r["organs"][organ]["pct"] for r in g[key]]) for key in bars]
        ax.bar(np.arange(len(bars)) + j * width, vals, width, yerr=errs, label=organ)
    ax.set_xticks(np.arange(len(bars)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{m}\n{s.split(' (')[0]}" for m, s in bars], rotation=60, fontsize=6)
    ax.set_ylabel("non-affine residual (% of organ diameter)")
    ax.set_title("(b) organ-scale non-rigid shape change (phantoms, mean ± sd)")
    ax.legend(fontsize=8)
    # (c) examples: deformed organs (solid) and their best-affine counterparts (dashed)
    p = cardiac_phantom_2d(size, generator=0)
    label = torch.as_tensor(p.label)
    shown = [k for k in examples if "T'=48" in k and "matched" not in k][:2]
    shown += [k for k in examples if "DRDM authors'" in k and "T'=48" in k][:2]
    shown += [k for k in examples if k.startswith("elastic | matched T'=48")][:1]
    shown += [k for k in examples if k.startswith("BigAug")][:1]
    for n, key in enumerate(shown[:6]):
        ax = fig.add_subplot(gs[1, n])
        u = torch.as_tensor(np.asarray(examples[key]), dtype=torch.float32)
        warped = warp_labels(label[None, None], u[None])[0, 0]
        ax.imshow(warp_image(p.image, u), cmap="gray")
        arr = u.double().numpy()
        for organ, color in (("RV", "tab:blue"), ("Myo", "tab:orange"), ("LV", "tab:green")):
            kk = ORGANS[organ]
            mask = torch.isin(warped, torch.tensor(kk)).numpy()
            res = nonrigid_residual(arr, mask)
            h, w = mask.shape
            grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
            mapped = (
                np.einsum("ij,j...->i...", res.affine[:, :2], grid) + res.affine[:, 2, None, None]
            )
            ddf = torch.as_tensor(mapped - grid, dtype=torch.float32)[None]
            moved = torch.isin(warp_labels(label[None, None], ddf)[0, 0], torch.tensor(kk))
            ax.contour(mask, [0.5], colors=color, linewidths=0.8)
            ax.contour(moved.numpy(), [0.5], colors=color, linewidths=0.8, linestyles="--")
        ax.set_title(key.replace(" | ", "\n").split(" (")[0], fontsize=8)
        rows_, cols_ = np.nonzero(label.numpy() > 0)
        pad = 12
        ax.set_xlim(cols_.min() - pad, cols_.max() + pad)
        ax.set_ylim(rows_.max() + pad, rows_.min() - pad)
        ax.axis("off")
    fig.text(
        0.01,
        0.01,
        "(c) phantom seed 0: deformed organs (solid) and the original organs moved by each "
        "organ's best affine fit (dashed); the gap is the non-rigid shape change.",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    save_figure(fig, path)


def warp_image(image: np.ndarray, u: torch.Tensor) -> np.ndarray:
    from drdm.spatial import warp

    x = torch.as_tensor(np.asarray(image), dtype=torch.float32)[None, None]
    return warp(x, u[None]).numpy()[0, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", choices=("fast", "official", "all"), default="fast")
    parser.add_argument("--images", choices=("phantoms", "real", "all"), default="all")
    parser.add_argument("--official", default="/tmp/official_diag", help="imported checkpoint")
    parser.add_argument("--size", type=int, default=128, help="phantom grid")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="phantoms")
    parser.add_argument("--drdm-samples", type=int, default=4, help="per image and level")
    parser.add_argument("--official-samples", type=int, default=2, help="per image and level")
    parser.add_argument("--baseline-samples", type=int, default=16, help="per image, setting")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write this part's rows")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="parts to merge")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    if args.merge:
        rows, examples = [], {}
        for part in args.merge:
            data = json.loads(part.read_text())
            print(f"part {part}: {data['settings']}")
            rows += data["rows"]
            examples.update(data["examples"])
    else:
        print(
            f"methods {args.methods}, images {args.images} (phantoms {args.size}^2, seeds "
            f"{args.seeds}), levels {LEVELS}, DRDM stride 1, {args.drdm_samples} default / "
            f"{args.official_samples} authors' samples per image and level, "
            f"{args.baseline_samples} per baseline setting, seed {args.seed}; forward process "
            f"of the default model = drdm.diffusion {ForwardDiffusionConfig()}"
        )
        t0 = time.perf_counter()
        rows, examples = run(args)
        print(f"total {time.perf_counter() - t0:.0f} s")
        if args.json:
            settings = {k: str(v) for k, v in vars(args).items()}
            args.json.write_text(
                json.dumps({"settings": settings, "rows": rows, "examples": examples})
            )
    tables(rows)
    if args.figure:
        figure(rows, examples, args.figure, args.size)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
