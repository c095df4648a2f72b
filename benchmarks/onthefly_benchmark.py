"""On-the-fly augmentation speed: DRDMDeform with a FieldBank against MONAI's elastic transforms.

Per sample, on the same image and label map in the same run (blocks interleaved, median of
the per-call times):

* 2D: a 256 x 256 cardiac phantom and its label map; ``DRDMDeform(bank)`` (a bank field of
  this image, BigAug's rotation/scaling/elastic field composed after it, ONE warp of image and
  label) against ``monai.transforms.Rand2DElasticd`` (bilinear image, nearest label);
* 3D stack: 216 x 256 x 10 at 1.56 x 1.56 x 10 mm (ten phantoms stacked), the 2D model slice
  by slice, against ``Rand3DElasticd``.

The bank is built once per image with the packaged default model (``FieldBank.build``:
``DRDMSampler`` / ``DRDM.generate`` with its default sampler); its cost is reported separately
and amortised over ``--epochs`` epochs (each image is drawn once per epoch).

    OMP_WAIT_POLICY=PASSIVE python3 benchmarks/onthefly_benchmark.py --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP busy-waiting

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _timing import machine  # noqa: E402

SPACING_3D = (1.56, 1.56, 10.0)


def data_2d():
    from drdm.data.phantoms import cardiac_phantom_2d

    p = cardiac_phantom_2d(256, generator=0)
    return p.image.float()[None], p.label.long()[None]  # (1, 256, 256)


def data_3d():
    from drdm.data.phantoms import cardiac_phantom_2d

    ps = [cardiac_phantom_2d((216, 256), generator=k, spacing=1.56) for k in range(10)]
    image = torch.stack([p.image.float() for p in ps], dim=-1)[None]  # (1, 216, 256, 10)
    label = torch.stack([p.label.long() for p in ps], dim=-1)[None]
    return image, label


def time_calls(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def compare(name, ours, theirs, repeats: int, blocks: int = 4) -> tuple[float, float]:
    """Median seconds per call of ``ours`` and ``theirs``, measured in interleaved blocks."""
    ours(), theirs()  # warm-up
    a, b = [], []
    for _ in range(blocks):
        a += time_calls(ours, repeats // blocks)
        b += time_calls(theirs, repeats // blocks)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per method")
    parser.add_argument("--num-fields", type=int, default=4, help="bank fields per image")
    parser.add_argument("--epochs", type=int, default=50, help="epochs to amortise the build")
    parser.add_argument("--skip-3d", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from monai.transforms import Rand2DElasticd, Rand3DElasticd

    from drdm import DRDM
    from drdm.pipelines import DRDMDeform, FieldBank

    print(f"machine: {machine()}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, interop "
        f"{torch.get_num_interop_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(f"load average before: {os.getloadavg()}")
    model = DRDM.from_pretrained("default")
    results = []

    # ------------------------------------------------------------------ 2D
    image, label = data_2d()
    bank = FieldBank.build(model, [image[0]], num_fields=args.num_fields, generator=gen(0))
    deform = DRDMDeform(bank, seed=0, layout="channel_first", stack="bigaug")
    elastic = Rand2DElasticd(
        ["image", "label"],
        spacing=(20, 20),
        magnitude_range=(1, 2),
        prob=1.0,
        mode=("bilinear", "nearest"),
        padding_mode="zeros",
    )
    elastic.set_random_state(0)
    sample = {"image": image, "label": label}
    ours, theirs = compare(
        "2D", lambda: deform(dict(sample)), lambda: elastic(dict(sample)), args.repeats
    )
    results.append(("2D 256x256 image+label", ours, theirs, bank))

    # ------------------------------------------------------------------ 3D stack
    if not args.skip_3d:
        vol, vlab = data_3d()
        bank3 = FieldBank.build(
            model, [vol[0]], num_fields=args.num_fields, spacing=SPACING_3D, generator=gen(1)
        )
        deform3 = DRDMDeform(
            bank3, seed=0, layout="channel_first", spacing=SPACING_3D, stack="bigaug"
        )
        elastic3 = Rand3DElasticd(
            ["image", "label"],
            sigma_range=(5, 8),
            magnitude_range=(50, 150),
            prob=1.0,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        )
        elastic3.set_random_state(0)
        sample3 = {"image": vol, "label": vlab}
        ours3, theirs3 = compare(
            "3D",
            lambda: deform3(dict(sample3)),
            lambda: elastic3(dict(sample3)),
            max(8, args.repeats // 4),
        )
        results.append(("216x256x10 stack image+label", ours3, theirs3, bank3))

    print()
    print("ratio ours / MONAI (target <= 2), per-sample seconds, then the bank's build cost:")
    for name, ours, theirs, _ in results:
        print(
            f"  {name}: ratio {ours / theirs:.2f}  (ours {ours * 1e3:.1f} ms, MONAI "
            f"{theirs * 1e3:.1f} ms)"
        )
    for name, ours, _, b in results:
        per_image = b.build_seconds / len(b)
        print(
            f"  {name}: bank of {args.num_fields} DRDM fields built in {per_image:.1f} s per "
            f"image ({b.nbytes / 2**20:.1f} MB); amortised over {args.epochs} epochs "
            f"{per_image / args.epochs * 1e3:.0f} ms per sample, total "
            f"{(ours + per_image / args.epochs) * 1e3:.0f} ms per sample"
        )
    print(f"load average after: {os.getloadavg()}")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
