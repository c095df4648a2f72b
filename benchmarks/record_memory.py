"""Memory of the adapters' transform records: per TorchIO ``Queue`` patch and per MONAI sample.

The records of ``RandomDRDMDeformation`` (TorchIO history) and ``DRDMDeformd`` (MONAI
``applied_operations``) hold the sampled field so that the deformation can be replayed and
inverted. This script counts the bytes that the outputs keep alive: every tensor reachable
from them (image data, label data, records), each storage once (shared storages count once
over all outputs of a run).

* TorchIO: one 3D subject (image + label map, ``--shape``), ``RandomDRDMDeformation``, a
  ``Queue`` that cuts ``--patches`` patches of ``--patch``; bytes per patch of all the patches
  kept together, against the bytes of the patches' own data. Also with ``invertible=False``.
* MONAI patches: ``DRDMDeformd`` then ``RandSpatialCropSamplesd`` cutting ``--patches``
  patches (MONAI's patch sampling; every crop copies the records); bytes per patch as above.
* MONAI: the same volume as a dict sample, ``DRDMDeformd`` then ``RandFlipd`` (a later
  transform: MONAI copies each key's records with ``copy.deepcopy``); bytes per sample in the
  process and after a pickle round trip (what a DataLoader worker sends). Also with
  ``invertible=False``.

The field comes from drdm's elastic baseline sampler (the record's size depends on the grid
only, not on where the field comes from).

    python3 benchmarks/record_memory.py            # numbers for docs/results/record_memory.md
"""

from __future__ import annotations

import argparse
import json
import pickle
from typing import Any

import numpy as np
import torch


def tensors_in(obj: Any, seen: set[int] | None = None) -> list[torch.Tensor]:
    """Every tensor reachable from ``obj`` through containers, TorchIO subjects and images,
    MONAI ``MetaTensor``s (data, meta and applied operations) and transform records."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found: list[torch.Tensor] = []
    if isinstance(obj, torch.Tensor):
        found.append(obj.as_subclass(torch.Tensor))
        for name in ("applied_operations", "meta"):
            if hasattr(obj, name) and type(obj) is not torch.Tensor:
                found += tensors_in(getattr(obj, name), seen)
        return found
    if isinstance(obj, np.ndarray):
        return [torch.from_numpy(obj)] if obj.dtype != object else []
    if isinstance(obj, dict):
        for value in obj.values():
            found += tensors_in(value, seen)
        history = getattr(obj, "applied_transforms", None)  # tio.Subject is a dict
        if history is not None:
            found += tensors_in(history, seen)
        return found
    if isinstance(obj, (list, tuple)):
        for value in obj:
            found += tensors_in(value, seen)
        return found
    data = getattr(obj, "data", None)  # tio.Image
    if isinstance(data, torch.Tensor):
        found += tensors_in(data, seen)
    return found


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    storages: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


class SmoothField:
    """Smooth random 3D fields (a coarse grid of Gaussian values, upsampled): a stand-in
    field sampler; the record's size depends on the grid only."""

    ndim = 3

    def sample_ddf(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (images.shape[0], 3, 5, 5, 5)
        coarse = torch.randn(shape, generator=generator, dtype=images.dtype) * 3
        return torch.nn.functional.interpolate(
            coarse, size=images.shape[2:], mode="trilinear", align_corners=True
        )


def volume(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, *shape, generator=g)
    label = (image > 0.5).to(torch.int64)
    return image, label


def torchio_patches(shape, patch, patches: int, invertible: bool) -> dict[str, float]:
    import torchio as tio

    from drdm.adapters.torchio import RandomDRDMDeformation

    image, label = volume(shape)
    subject = tio.Subject(image=tio.ScalarImage(tensor=image), seg=tio.LabelMap(tensor=label))
    options = {} if invertible else {"invertible": False}
    transform = RandomDRDMDeformation(SmoothField(), seed=0, **options)
    queue = tio.Queue(
        tio.SubjectsDataset([subject], transform),
        max_length=patches,
        samples_per_volume=patches,
        sampler=tio.UniformSampler(patch),
        num_workers=0,
        shuffle_patches=False,
    )
    kept = [queue[i] for i in range(patches)]
    total = storage_bytes(tensors_in(kept))
    data = storage_bytes([t for p in kept for t in (p["image"].data, p["seg"].data)])
    return {"per_patch_mb": total / patches / 1e6, "data_per_patch_mb": data / patches / 1e6}


def monai_sample(shape, invertible: bool) -> dict[str, float]:
    from monai.data import MetaTensor
    from monai.transforms import Compose, RandFlipd

    from drdm.adapters.monai import DRDMDeformd

    image, label = volume(shape)
    options = {} if invertible else {"invertible": False}
    pipeline = Compose(
        [
            DRDMDeformd(["image", "label"], SmoothField(), label_keys=["label"], **options),
            RandFlipd(["image", "label"], prob=1.0, spatial_axis=0),
        ]
    )
    pipeline.set_random_state(0)
    sample = {"image": MetaTensor(image), "label": MetaTensor(label)}
    out = pipeline(sample)
    sent = pickle.loads(pickle.dumps(out))  # as a DataLoader worker sends it
    data = storage_bytes([out["image"].as_tensor(), out["label"].as_tensor()])
    return {
        "per_sample_mb": storage_bytes(tensors_in(out)) / 1e6,
        "per_sample_sent_mb": storage_bytes(tensors_in(sent)) / 1e6,
        "data_per_sample_mb": data / 1e6,
    }


def monai_patches(shape, patch, patches: int, invertible: bool) -> dict[str, float]:
    from monai.data import MetaTensor
    from monai.transforms import Compose, RandSpatialCropSamplesd

    from drdm.adapters.monai import DRDMDeformd

    image, label = volume(shape)
    options = {} if invertible else {"invertible": False}
    pipeline = Compose(
        [
            DRDMDeformd(["image", "label"], SmoothField(), label_keys=["label"], **options),
            RandSpatialCropSamplesd(
                ["image", "label"], roi_size=patch, num_samples=patches, random_size=False
            ),
        ]
    )
    pipeline.set_random_state(0)
    kept = pipeline({"image": MetaTensor(image), "label": MetaTensor(label)})
    total = storage_bytes(tensors_in(kept))
    data = storage_bytes([p[key].as_tensor() for p in kept for key in ("image", "label")])
    return {"per_patch_mb": total / patches / 1e6, "data_per_patch_mb": data / patches / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(132, 156, 126))
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 8))
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    shape, patch = tuple(args.shape), tuple(args.patch)
    field_mb = 3 * int(np.prod(shape)) * 4 / 1e6
    results: dict[str, Any] = {"shape": shape, "patch": patch, "field_mb": field_mb}
    print(f"volume {shape}: one float32 field is {field_mb:.1f} MB")
    for invertible in (True, False):
        tag = "recorded" if invertible else "invertible=False"
        try:
            tio_mb = torchio_patches(shape, patch, args.patches, invertible)
        except TypeError as err:  # a version without the opt-out
            print(f"TorchIO ({tag}): {err}")
        else:
            results[f"torchio_{tag}"] = tio_mb
            print(
                f"TorchIO Queue, {args.patches} patches of {patch} ({tag}): "
                f"{tio_mb['per_patch_mb']:.2f} MB per patch "
                f"(patch data {tio_mb['data_per_patch_mb']:.2f} MB)"
            )
        mp = monai_patches(shape, patch, args.patches, invertible)
        results[f"monai_patches_{tag}"] = mp
        print(
            f"MONAI RandSpatialCropSamplesd, {args.patches} patches of {patch} ({tag}): "
            f"{mp['per_patch_mb']:.2f} MB per patch (patch data {mp['data_per_patch_mb']:.2f} MB)"
        )
        mo = monai_sample(shape, invertible)
        results[f"monai_{tag}"] = mo
        print(
            f"MONAI DRDMDeformd + RandFlipd ({tag}): {mo['per_sample_mb']:.1f} MB per sample "
            f"in the process, {mo['per_sample_sent_mb']:.1f} MB from a worker "
            f"(image + label {mo['data_per_sample_mb']:.1f} MB)"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
