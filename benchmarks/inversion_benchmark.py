"""Field inversion: drdm.spatial.invert_field beside the previous whole-grid Newton solver and
SimpleITK's InvertDisplacementFieldImageFilter, on the fields the inverse paths meet.

Fields (pull-back, voxels), each a bank field of the packaged default model with BigAug's
rotation, scaling and elastic field composed after it (``DRDMDeform(bank, stack="bigaug")``,
the geometry the MONAI/TorchIO records hold):

* 2D: 256 x 256 cardiac phantom, ``--draws`` draws;
* stack: 216 x 256 x 10 at 1.56 x 1.56 x 10 mm (ten phantoms), slice-wise fields;
* (``--volume``) 3D: a 132 x 156 x 126 thorax phantom with the packaged ``default-3d`` model.

Methods, timed one after another on the same field in the same run (one thread each):

* ``drdm``: :func:`drdm.spatial.invert_field` (active points only, closed-form solves);
* ``previous``: the solver before issue 19, a whole-grid Newton iteration with
  ``torch.linalg.solve`` and central-difference Jacobians, kept here as the reference;
* ``sitk``: ``InvertDisplacementFieldImageFilter`` with its defaults (10 iterations, mean error
  1e-3, max error 0.1, boundary forced to zero); ``sitk-50``: 50 iterations, tolerances 1e-6,
  boundary free.

Residual ``|v(x) + u(x + v(x))|`` (largest component, voxels; ``u`` sampled linearly with
border values, by ``drdm.spatial.warp``) at the points whose source ``x + v(x)`` lies inside
the grid: the 99th percentile and the largest, the share of points below 1e-3, and the 99th
percentile at least 3 voxels from the edge (ITK continues a field by zero outside it, drdm by
its edge values, so near the edge the two solve different equations). Also the end-to-end
``Invertd`` of a MONAI record (image and label keys) of the stack.

    OMP_WAIT_POLICY=PASSIVE python3 benchmarks/inversion_benchmark.py --threads 1
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

SPACING_STACK = (1.56, 1.56, 10.0)


# ---------------------------------------------------------------------------- methods
def previous_newton(u: torch.Tensor, iterations: int = 30, tolerance: float = 1e-3) -> torch.Tensor:
    """The whole-grid Newton solver of drdm before issue 19 (``u`` ``(B, d, *spatial)``)."""
    from drdm.spatial import warp

    batch, nd, spatial = u.shape[0], u.shape[1], tuple(u.shape[2:])
    dims = tuple(range(1, nd + 1))
    grads = [torch.stack(torch.gradient(u[:, i], dim=dims), 1) for i in range(nd)]
    jac = torch.stack(grads, 1).reshape(batch, nd * nd, *spatial)
    eye = torch.eye(nd, dtype=u.dtype)

    def residual_of(w):
        return w + warp(u, w, "linear", "border")

    v = -u
    residual = residual_of(v)
    for _ in range(iterations):
        if float(residual.abs().max()) < tolerance:
            break
        sampled = warp(jac, v, "linear", "zeros").reshape(batch, nd, nd, *spatial)
        a = eye + sampled.movedim(1, -1).movedim(1, -1)
        ok = torch.linalg.det(a) > 0.05
        a = torch.where(ok[..., None, None], a, eye)
        r = residual.movedim(1, -1).unsqueeze(-1)
        step = torch.linalg.solve(a, r).squeeze(-1).movedim(-1, 1)
        trial = v - step
        trial_residual = residual_of(trial)
        worse = trial_residual.norm(dim=1, keepdim=True) > residual.norm(dim=1, keepdim=True)
        if bool(worse.any()):
            damped = v - 0.25 * step
            trial = torch.where(worse, damped, trial)
            trial_residual = torch.where(worse, residual_of(damped), trial_residual)
        v, residual = trial, trial_residual
    return v


def previous(u: torch.Tensor) -> torch.Tensor:
    """``previous_newton`` with the slice-wise handling of the time (slices as a batch)."""
    if u.shape[0] == 3 and not bool(u[2].any()):
        slices = u[:2].movedim(3, 0)
        out = torch.zeros_like(u)
        out[:2] = previous_newton(slices).movedim(0, 3)
        return out
    return previous_newton(u[None])[0]


def sitk_inverse(u: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
    """SimpleITK's InvertDisplacementFieldImageFilter on ``u`` ``(d, *spatial)`` (unit
    spacing: physical units are voxels; ITK's x is the last array axis)."""
    import SimpleITK as sitk

    nd = u.shape[0]
    vectors = u.flip(0).movedim(0, -1).double().numpy()  # (*spatial, d), ITK's (x, y[, z])
    image = sitk.GetImageFromArray(vectors, isVector=True)
    f = sitk.InvertDisplacementFieldImageFilter()
    f.SetNumberOfThreads(1)
    if iterations is not None:
        f.SetMaximumNumberOfIterations(iterations)
        f.SetMeanErrorToleranceThreshold(1e-6)
        f.SetMaxErrorToleranceThreshold(1e-6)
        f.EnforceBoundaryConditionOff()
    out = sitk.GetArrayFromImage(f.Execute(image))  # (*spatial, d)
    v = torch.from_numpy(np.ascontiguousarray(out)).movedim(-1, 0).flip(0)
    assert v.shape[0] == nd
    return v.to(u.dtype)


def residual_stats(u: torch.Tensor, v: torch.Tensor) -> tuple[float, float, float, float]:
    """p99 and max of the residual inside the grid (voxels), the share below 1e-3, and the
    p99 at least 3 voxels from the grid's edge (ITK continues a field by zero outside its
    buffer where drdm continues it by its edge values: near the edge the two conventions
    define different inverses)."""
    from drdm.spatial import identity_grid, warp

    r = (v + warp(u[None], v[None], "linear", "border")[0]).abs().amax(0)
    pos = identity_grid(u.shape[1:], dtype=u.dtype) + v
    inside = torch.ones(u.shape[1:], dtype=torch.bool)
    interior = torch.ones(u.shape[1:], dtype=torch.bool)
    for i, n in enumerate(u.shape[1:]):
        inside &= (pos[i] >= 0) & (pos[i] <= n - 1)
        if n > 7:  # not along the 10-slice axis of a stack (its component is zero)
            interior &= (pos[i] >= 3) & (pos[i] <= n - 4)
    values = r[inside].double()
    p99 = float(torch.quantile(values, 0.99)) if values.numel() < 2**24 else float("nan")
    core = r[interior].double()
    p99_core = float(torch.quantile(core, 0.99)) if core.numel() < 2**24 else float("nan")
    return p99, float(values.max()), float((values < 1e-3).double().mean()), p99_core


# ---------------------------------------------------------------------------- fields
def fields_2d(model, draws: int) -> list[torch.Tensor]:
    from drdm.data.phantoms import cardiac_phantom_2d
    from drdm.pipelines import DRDMDeform, FieldBank

    image = cardiac_phantom_2d(256, generator=0).image.float()
    bank = FieldBank.build(model, [image], num_fields=3, generator=torch.Generator().manual_seed(0))
    deform = DRDMDeform(bank, stack="bigaug", ddf_key="ddf", layout="spatial")
    g = torch.Generator().manual_seed(1)
    return [deform.apply_dict({"image": image}, generator=g)["ddf"] for _ in range(draws)]


def stack_image() -> torch.Tensor:
    from drdm.data.phantoms import cardiac_phantom_2d

    ps = [cardiac_phantom_2d((216, 256), generator=k, spacing=1.56) for k in range(10)]
    return torch.stack([p.image.float() for p in ps], dim=-1)  # (216, 256, 10)


def fields_stack(model, draws: int) -> tuple[list[torch.Tensor], object]:
    from drdm.pipelines import DRDMDeform, FieldBank

    image = stack_image()
    bank = FieldBank.build(
        model,
        [image],
        num_fields=1,
        spacing=SPACING_STACK,
        generator=torch.Generator().manual_seed(0),
    )
    deform = DRDMDeform(bank, stack="bigaug", ddf_key="ddf", layout="spatial")
    g = torch.Generator().manual_seed(2)
    out = [
        deform.apply_dict({"image": image}, generator=g, spacing=SPACING_STACK)["ddf"]
        for _ in range(draws)
    ]
    return out, bank


def fields_volume() -> list[torch.Tensor]:
    from drdm import DRDM
    from drdm.data.phantoms import thorax_phantom_3d
    from drdm.pipelines import DRDMDeform

    image = thorax_phantom_3d((132, 156, 126), generator=0).image.float()
    deform = DRDMDeform(DRDM.from_pretrained("default-3d"), stack="bigaug", ddf_key="ddf")
    g = torch.Generator().manual_seed(3)
    return [deform.apply_dict({"image": image}, generator=g)["ddf"]]


# ---------------------------------------------------------------------------- main
def run(name: str, fields: list[torch.Tensor], methods: dict) -> None:
    times: dict[str, list[float]] = {m: [] for m in methods}
    stats: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in methods}
    for u in fields:
        for method, fn in methods.items():
            start = time.perf_counter()
            v = fn(u)
            times[method].append(time.perf_counter() - start)
            stats[method].append(residual_stats(u, v))
    for method in methods:
        p99 = max(s[0] for s in stats[method])
        top = max(s[1] for s in stats[method])
        share = min(s[2] for s in stats[method])
        core = max(s[3] for s in stats[method])
        print(
            f"| {name} | {method} | {statistics.median(times[method]):.3f} "
            f"| {min(times[method]):.3f}–{max(times[method]):.3f} | {p99:.1e} | {top:.1e} "
            f"| {100 * share:.3f} | {core:.1e} |",
            flush=True,
        )


def invertd_stack(bank) -> None:
    """Seconds of MONAI's Invertd on a record of the stack with an image and a label key."""
    from monai.data import MetaTensor
    from monai.transforms import Compose, Invertd

    import drdm.adapters.records as records
    from drdm.adapters.monai import DRDMDeformd

    image = stack_image()[None]
    affine = torch.diag(torch.tensor([*SPACING_STACK, 1.0]))
    data = {
        "image": MetaTensor(image, affine=affine),
        "label": MetaTensor((image > 0.5).float(), affine=affine),
    }
    keys = ["image", "label"]
    pipeline = Compose([DRDMDeformd(keys, bank, label_keys=["label"], stack="bigaug", seed=0)])
    times = []
    for _ in range(3):
        out = pipeline(data)
        records._RECENT_INVERSES = ()  # time the inversion, not the memory of the last one
        start = time.perf_counter()
        Invertd(keys, transform=pipeline, orig_keys=keys)(out)
        times.append(time.perf_counter() - start)
    print(
        f"Invertd of a 216 x 256 x 10 record (image + label keys): median "
        f"{statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--stack-draws", type=int, default=3)
    parser.add_argument("--volume", action="store_true", help="also the 3D volume (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {os.getloadavg()}"
    )
    import SimpleITK as sitk

    from drdm import DRDM
    from drdm.spatial import invert_field

    print(f"SimpleITK {sitk.Version.VersionString()}, 1 thread")
    model = DRDM.from_pretrained("default")
    methods = {
        "drdm": invert_field,
        "previous": previous,
        "sitk": sitk_inverse,
        "sitk-50": lambda u: sitk_inverse(u, 50),
    }
    print()
    print(
        "| field | method | median s | range s | residual p99 | max | % inside < 1e-3 "
        "| p99 3+ voxels from the edge |"
    )
    print("|---|---|---|---|---|---|---|---|")
    run("256²", fields_2d(model, args.draws), methods)
    stack_fields, bank = fields_stack(model, args.stack_draws)
    # the stack's fields are 2D deformations slice by slice along axis 2 (the coarse axis)
    run("216x256x10", stack_fields, {**methods, "drdm": lambda u: invert_field(u, slice_axis=2)})
    if args.volume:
        run("132x156x126", fields_volume(), {"drdm": invert_field, "sitk": sitk_inverse})
    print()
    invertd_stack(bank)


if __name__ == "__main__":
    main()
