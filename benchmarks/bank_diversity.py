"""How diverse FieldBank draws are, and what the fresh field composed with every draw costs.

A K = 4 bank of the packaged default model on a 256 x 256 cardiac phantom (levels 32 and 48
in turn, ``FieldBank.build``). For each ``jitter`` (the size of the fresh smooth field that
``FieldBank.draw`` composes after the bank field; 0 = the bare bank fields, as before issue
19), 200 draws of the image (one per epoch over 200 epochs):

* distinct fields among the draws (bit for bit), and among the first 50 and the first 16;
* the smallest distance between two draws: RMS over the image of the difference of the two
  fields, in voxels, and its median over all pairs;
* Table-1 magnitudes (mean and max ``|φ|`` in % of the image size, folds in %) of the drawn
  fields beside the bare bank fields';
* the time of one draw and of one ``DRDMDeform(bank, stack=None)`` sample (image + label, one
  warp), and of one draw from a slice-wise 216 x 256 x 10 stack bank (its fields: the 2D
  fields resized to 216 x 256, one per slice; content does not change the cost).

    OMP_WAIT_POLICY=PASSIVE python3 benchmarks/bank_diversity.py --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP busy-waiting

import argparse  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from _timing import machine  # noqa: E402


def distances(fields: torch.Tensor) -> torch.Tensor:
    """RMS (over the grid, all components) distance of every pair of ``(N, d, *spatial)``."""
    flat = fields.reshape(fields.shape[0], -1).double()
    out = []
    for i in range(flat.shape[0] - 1):
        out.append(((flat[i + 1 :] - flat[i]) ** 2).mean(1).sqrt())
    return torch.cat(out)


def distinct(fields: torch.Tensor) -> int:
    return len({hashlib.sha1(f.numpy().tobytes()).hexdigest() for f in fields})


def magnitudes(fields: torch.Tensor) -> tuple[float, float, float]:
    from drdm.spatial import fold_ratio, magnitude_stats

    stats = [magnitude_stats(f[None]) for f in fields]
    mean = statistics.mean(float(s.mean_percent) for s in stats)
    peak = statistics.mean(float(s.max_percent) for s in stats)
    folds = statistics.mean(100.0 * float(fold_ratio(f[None])) for f in fields)
    return mean, peak, folds


def per_call(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--jitters", default="0,0.005,0.01,0.02")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {os.getloadavg()}"
    )

    from drdm import DRDM
    from drdm.data.phantoms import cardiac_phantom_2d
    from drdm.pipelines import DRDMDeform, FieldBank
    from drdm.spatial import resize_ddf

    phantom = cardiac_phantom_2d(256, generator=0)
    image, label = phantom.image.float()[None], phantom.label.long()[None]
    model = DRDM.from_pretrained("default")
    start = time.perf_counter()
    bank = FieldBank.build(
        model, [image[0]], num_fields=4, generator=torch.Generator().manual_seed(0)
    )
    print(f"bank: K = 4 fields of a 256 x 256 phantom built in {time.perf_counter() - start:.1f} s")
    bare = bank.fields(0).float()
    m0 = magnitudes(bare)
    print(f"bare bank fields: mean |phi| {m0[0]:.2f} %, max {m0[1]:.2f} %, folds {m0[2]:.3f} %")

    stack_fields = resize_ddf(bare, (216, 256))  # (4, 2, 216, 256): one per slice below
    stack = torch.zeros(4, 3, 216, 256, 10)
    for s in range(10):
        stack[:, :2, :, :, s] = stack_fields.roll(s, 0)
    stack_image = torch.rand(1, 216, 256, 10)

    print()
    print(
        "| jitter | distinct of 200 / 50 / 16 draws | closest pair (RMS, voxels) | median pair "
        "| mean \\|φ\\| % | max \\|φ\\| % | folds % | draw 256² (ms) | sample 256² (ms) "
        "| draw 216x256x10 (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for jitter in (float(j) for j in args.jitters.split(",")):
        bank.jitter = jitter
        g = torch.Generator().manual_seed(1)
        drawn = torch.stack([bank.draw(g, image=image) for _ in range(args.draws)])
        d = distances(drawn)
        counts = [distinct(drawn), distinct(drawn[:50]), distinct(drawn[:16])]
        m = magnitudes(drawn)
        deform = DRDMDeform(bank, stack=None, seed=0)
        sample = {"image": image, "label": label}
        draw_t = per_call(functools.partial(bank.draw, g, image=image), args.repeats)
        sample_t = per_call(functools.partial(deform, sample), args.repeats)
        stack_bank = FieldBank(2, jitter=jitter)
        stack_bank.add("stack", stack, slice_axis=2)  # 2D fields, slice by slice along z
        draw_stack = functools.partial(stack_bank.draw, g, image=stack_image)
        stack_t = per_call(draw_stack, args.repeats // 4)
        print(
            f"| {jitter:g} | {counts[0]} / {counts[1]} / {counts[2]} | {float(d.min()):.2f} "
            f"| {float(d.median()):.2f} | {m[0]:.2f} ({100 * (m[0] / m0[0] - 1):+.1f} %) "
            f"| {m[1]:.2f} ({100 * (m[1] / m0[1] - 1):+.1f} %) | {m[2]:.3f} "
            f"| {1e3 * draw_t:.1f} | {1e3 * sample_t:.1f} | {1e3 * stack_t:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
