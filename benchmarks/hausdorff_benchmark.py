"""HD95 speed: drdm.metrics.hausdorff95 beside MONAI's compute_hausdorff_distance(percentile=95).

Same label maps, same run, one thread, calls interleaved (``_timing.turns``); MONAI gets its
one-hot tensors prepared outside the timed call. Cases: a 256 x 256 cardiac phantom label map
(3 labels) against a deformed copy (a smooth random field), and a 128^3 thorax phantom (2
labels) against a shifted copy, at anisotropic spacings. The values are checked equal.

    OMP_WAIT_POLICY=PASSIVE python3 benchmarks/hausdorff_benchmark.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP busy-waiting

import statistics  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import machine, median_ratio, turns  # noqa: E402


def cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    from drdm.data.phantoms import cardiac_phantom_2d, thorax_phantom_3d
    from drdm.spatial import warp_labels

    label = cardiac_phantom_2d(256, generator=0).label.long()
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 2, 5, 5, generator=g) * 6.0
    ddf = torch.nn.functional.interpolate(coarse, size=(256, 256), mode="bicubic")
    moved = warp_labels(label[None, None], ddf)[0, 0]
    out = [("256² cardiac, 3 labels", label.numpy(), moved.numpy(), (1.56, 1.56))]
    lungs = thorax_phantom_3d(128, generator=0).label.long().numpy()
    shifted = np.roll(lungs, (2, -3, 1), axis=(0, 1, 2))
    out.append(("128³ thorax, 2 labels", lungs, shifted, (3.0, 3.0, 2.5)))
    return out


def main() -> None:
    torch.set_num_threads(1)
    from monai.metrics import compute_hausdorff_distance

    from drdm.metrics import hausdorff95

    print(f"machine: {machine()}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {os.getloadavg()}"
    )
    print()
    print("| case | drdm (s) | MONAI (s) | drdm / MONAI | equal |")
    print("|---|---|---|---|---|")
    for name, pred, target, spacing in cases():
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(target)) if v)
        onehot = [
            torch.from_numpy(np.stack([m == k for k in [0, *labels]])[None]).float()
            for m in (pred, target)
        ]

        def ours(pred=pred, target=target, labels=labels, spacing=spacing):
            return hausdorff95(pred, target, labels=labels, spacing=spacing)

        def theirs(onehot=onehot, spacing=spacing):
            return compute_hausdorff_distance(*onehot, percentile=95, spacing=list(spacing))

        times = turns({"drdm": ours, "monai": theirs}, repeats=5)
        a, b = ours(), theirs()[0].tolist()
        equal = all(abs(a[k] - b[i]) <= 1e-5 * max(1.0, b[i]) for i, k in enumerate(labels))
        print(
            f"| {name} | {statistics.median(times['drdm']):.3f} "
            f"| {statistics.median(times['monai']):.3f} "
            f"| {median_ratio(times['drdm'], times['monai']):.2f} | {equal} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
