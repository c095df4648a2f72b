"""Throughput of ``drdm augment`` on a 10-slice short-axis stack: seconds per deformed volume.

The input is a 216 x 256 x 10 volume (1.56 x 1.56 x 10 mm) stacked from ten built-in cardiac
phantoms, with its label map, written as NIfTI. ``drdm augment`` runs on it at 3 levels x 8
samples (24 deformed volumes, each of 10 slices deformed slice by slice by a 2D model, one
native-resolution warp of image and labels, the DDF and the files written) through the real
command (``drdm.cli.main.main``), into a fresh output folder per run, without the figure
unless ``--figure``. Reported: wall time per run (model loading included) and seconds per
deformed volume; the median over ``--runs`` runs.

The model is ``--model`` (default ``default``). When that is not installed, or with
``--model random``, it is a randomly initialised network of the default architecture
(configs/default-2d.yaml: widths 10/20/40, bottleneck 20, K = 2 recursions, T = 80, 64 x 64)
saved to a temporary folder; the time does not depend on the weights, and the output says
which model ran.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/augment_benchmark.py [--threads 2] [--runs 3]
        [--model default|random|DIR] [--levels 30,45,55] [--per-level 8] [--figure]
        [--stack auto|bigaug|affine|none]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPE = (216, 256)
SLICES = 10
SPACING = (1.56, 1.56, 10.0)


def write_stack(folder: Path) -> tuple[Path, Path]:
    """The 216 x 256 x 10 short-axis stack and its labels, as NIfTI."""
    from drdm.data.phantoms import cardiac_phantom_2d
    from drdm.io import write_volume

    phantoms = [cardiac_phantom_2d(SHAPE, generator=k, spacing=SPACING[0]) for k in range(SLICES)]
    image = np.stack([p.image.numpy() for p in phantoms], axis=-1)
    label = np.stack([p.label.numpy() for p in phantoms], axis=-1).astype(np.uint8)
    affine = np.diag([*SPACING, 1.0])
    write_volume(folder / "sax.nii.gz", image, affine)
    write_volume(folder / "sax_gt.nii.gz", label, affine)
    return folder / "sax.nii.gz", folder / "sax_gt.nii.gz"


def random_default_model(folder: Path) -> Path:
    """A randomly initialised network of the default 2D architecture, saved to ``folder``."""
    from drdm import DRDM
    from drdm.diffusion import ForwardDiffusion  # noqa: I001
    from drdm.nn import RecursiveUNet
    from drdm.training import load_train_config

    config = load_train_config(Path(__file__).resolve().parents[1] / "configs/default-2d.yaml")
    network = RecursiveUNet(config.network, generator=torch.Generator().manual_seed(0))
    model = DRDM(network, ForwardDiffusion(config.forward), config.data.image_size)
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--model", default="default", help="default, random or a folder")
    parser.add_argument("--levels", default="30,45,55")
    parser.add_argument("--per-level", type=int, default=8)
    parser.add_argument("--figure", action="store_true", help="also draw overview.png")
    parser.add_argument(
        "--stack", default="auto", help="drdm augment --stack (default auto: DRDM, then BigAug)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from drdm.cli.main import main as drdm
    from drdm.pretrained import is_available

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image, label = write_stack(root)
        model = args.model
        if model == "random" or (model == "default" and not is_available("default")):
            model = str(random_default_model(root / "model"))
            which = "a RANDOMLY INITIALISED network of the default architecture (no trained "
            which += "'default' installed; the time does not depend on the weights)"
        else:
            which = f"model {model!r}"
        count = len(args.levels.split(",")) * args.per_level
        print(
            f"drdm augment on {SHAPE[0]} x {SHAPE[1]} x {SLICES} (spacing {SPACING} mm), levels "
            f"{args.levels} x {args.per_level} samples = {count} deformed volumes, "
            f"--stack {args.stack}"
        )
        print(
            f"{which}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
        )
        times = []
        for run in range(args.runs):
            out = root / f"out{run}"
            argv = ["augment", "--image", str(image), "--label", str(label), "--model", model]
            argv += ["--levels", args.levels, "--per-level", str(args.per_level)]
            argv += ["--out", str(out), "--quiet", "--device", "cpu"]
            argv += ["--threads", str(args.threads), "--stack", args.stack]
            argv += [] if args.figure else ["--no-figure"]
            start = time.perf_counter()
            status = drdm(argv)
            elapsed = time.perf_counter() - start
            if status != 0:
                raise SystemExit(f"drdm augment failed with status {status}")
            times.append(elapsed)
            print(f"run {run}: {elapsed:.1f} s, {elapsed / count:.2f} s per deformed volume")
        median = statistics.median(times)
        print(
            f"median of {len(times)} run(s): {median:.1f} s for {count} volumes = "
            f"{median / count:.2f} s per deformed volume ({median / count / SLICES:.3f} s per "
            "slice)"
        )


if __name__ == "__main__":
    main()
