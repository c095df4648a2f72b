"""Model-backed transforms in every DataLoader mode (README, *DataLoader modes*).

The transforms hold the packaged DRDM model, whose ONNX Runtime sessions are per-process
state: a forked worker must not destroy the sessions it inherited (with a multi-thread pool
that blocks forever), and spawn / forkserver workers, ``pickle``, ``copy.deepcopy`` and
``torch.save`` must work before and after the model's first use. Every test runs with 2 torch
threads and 2 workers, after the transform ran in the main process, under a timeout, so that
a hang fails instead of stalling the run.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import signal

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from drdm import DRDM
from drdm.nn.engine import onnxruntime_available
from drdm.pipelines import DRDMDeform
from helpers import gen, tiny_model

pytestmark = pytest.mark.skipif(
    not onnxruntime_available(), reason="the ONNX Runtime engine is not installed"
)

#: seconds before a loader that waits for a worker counts as hung
TIMEOUT = 60


@pytest.fixture(scope="module")
def model():
    """The packaged model at 2 torch threads (restored after the module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield DRDM.from_pretrained("default")
    torch.set_num_threads(before)


def used(model: DRDM) -> DRDM:
    """``model`` after a first use in this process (its engine holds a live session)."""
    DRDMDeform(model, level=4)(torch.rand(1, 32, 32, generator=gen(0)))
    engine = model.inference_network()
    grid = tuple(model.image_size)
    assert engine.session_grids == (grid,), "the test needs a session built in this process"
    return model


def images(n: int = 4) -> list[torch.Tensor]:
    return [torch.rand(1, 32, 32, generator=gen(i)) for i in range(n)]


class Images(Dataset):
    """Plain PyTorch dataset: ``(1, 32, 32)`` images through a transform."""

    def __init__(self, transform, n: int = 4) -> None:
        self.transform = transform
        self.images = images(n)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


def check_batches(batches: list[torch.Tensor], n: int = 4) -> None:
    out = torch.cat(batches)
    assert out.shape == (n, 1, 32, 32) and torch.isfinite(out).all()
    originals = torch.stack(images(n))
    assert all(not torch.equal(a, b) for a, b in zip(out, originals, strict=True))  # deformed


def in_forked_child(target, timeout: float = TIMEOUT) -> None:
    """Run ``target()`` in a forked child (its own process group, so its workers can be
    killed with it); fail if it hangs past ``timeout`` or exits with an error. The child runs
    torch on one thread, as a DataLoader worker does (OpenMP's pool does not survive fork);
    ONNX Runtime keeps the 2 threads the engine was built with."""

    def run() -> None:
        os.setpgrp()
        torch.set_num_threads(1)
        target()

    process = multiprocessing.get_context("fork").Process(target=run)
    process.start()
    process.join(timeout)
    if process.is_alive():
        os.killpg(process.pid, signal.SIGKILL)
        process.join()
        pytest.fail(f"hung: still running after {timeout} s")
    assert process.exitcode == 0


# ---------------------------------------------------------------------------- plain PyTorch
def test_torch_dataloader_forked_workers_after_use_in_main_process(model):
    dataset = Images(DRDMDeform(used(model), level=4, seed=0))
    loader = DataLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=TIMEOUT
    )
    check_batches(list(loader))


def transforms(model: DRDM) -> list:
    """The three model-backed transforms: plain, MONAI and TorchIO."""
    found = [DRDMDeform(model, level=4)]
    try:
        from drdm.adapters.monai import DRDMDeformd

        found.append(DRDMDeformd(["image"], model, level=4))
    except ImportError:
        pass
    try:
        from drdm.adapters.torchio import RandomDRDMDeformation

        found.append(RandomDRDMDeformation(model, level=4))
    except ImportError:
        pass
    return found


def apply(transform, image: torch.Tensor, seed: int) -> torch.Tensor:
    """One deformation of ``image`` ``(1, 32, 32)`` by ``transform`` with fixed randomness."""
    torch.manual_seed(seed)
    if isinstance(transform, DRDMDeform):
        return transform(image, generator=gen(seed))
    name = type(transform).__name__
    if name == "DRDMDeformd":
        transform.set_random_state(seed)
        return torch.as_tensor(transform({"image": image})["image"])
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=image[..., None]))
    return transform(subject)["image"].data[..., 0]


# ---------------------------------------------------------------------------- MONAI
def monai_samples(n: int = 4) -> list[dict]:
    return [{"image": image} for image in images(n)]


def test_monai_dataloader_forked_workers_after_use(model):
    pytest.importorskip("monai")
    from monai.data import DataLoader as MonaiLoader
    from monai.data import Dataset as MonaiDataset

    from drdm.adapters.monai import DRDMDeformd

    dataset = MonaiDataset(monai_samples(), DRDMDeformd(["image"], used(model), level=4))
    dataset[0]  # look at one sample first
    loader = MonaiLoader(dataset, batch_size=2, num_workers=2, timeout=TIMEOUT)
    check_batches([torch.as_tensor(batch["image"]) for batch in loader])


def test_monai_cache_dataset_with_workers_after_use(model):
    pytest.importorskip("monai")
    from monai.data import CacheDataset
    from monai.data import DataLoader as MonaiLoader
    from monai.transforms import Compose, EnsureTyped

    from drdm.adapters.monai import DRDMDeformd

    pipeline = Compose([EnsureTyped("image"), DRDMDeformd(["image"], used(model), level=4)])
    dataset = CacheDataset(monai_samples(), pipeline, num_workers=2, progress=False)
    loader = MonaiLoader(dataset, batch_size=2, num_workers=2, timeout=TIMEOUT)
    first = [torch.as_tensor(batch["image"]) for batch in loader]
    check_batches(first)
    second = [torch.as_tensor(batch["image"]) for batch in loader]
    assert not torch.equal(torch.cat(first), torch.cat(second))  # the random part is not cached


# ---------------------------------------------------------------------------- TorchIO
def subjects(n: int = 4) -> list:
    import torchio as tio

    return [tio.Subject(image=tio.ScalarImage(tensor=image[..., None])) for image in images(n)]


def test_torchio_subjects_loader_forked_workers_after_use(model):
    tio = pytest.importorskip("torchio")
    from drdm.adapters.torchio import RandomDRDMDeformation

    dataset = tio.SubjectsDataset(subjects(), RandomDRDMDeformation(used(model), level=4))
    dataset[0]
    loader = tio.SubjectsLoader(dataset, batch_size=2, num_workers=2, timeout=TIMEOUT)
    check_batches([batch["image"]["data"][..., 0] for batch in loader])


@pytest.mark.slow  # DataLoader workers (about 5.5 s)
def test_torchio_queue_with_workers_after_use(model):
    tio = pytest.importorskip("torchio")
    from drdm.adapters.torchio import RandomDRDMDeformation

    transform = RandomDRDMDeformation(model, level=4)

    def epoch() -> None:  # the Queue's own loader has no timeout: run it in a child
        used(model)
        queue = tio.Queue(
            tio.SubjectsDataset(subjects(), transform),
            max_length=8,
            samples_per_volume=2,
            sampler=tio.UniformSampler((16, 16, 1)),
            num_workers=2,
        )
        patches = [b["image"]["data"] for b in tio.SubjectsLoader(queue, batch_size=4)]
        out = torch.cat(patches)
        assert out.shape == (8, 1, 16, 16, 1) and torch.isfinite(out).all()
        os._exit(0)

    in_forked_child(epoch)


# ---------------------------------------------------------------------------- pickling
# (last: on a broken engine a failed pickling keeps references to the sessions in its
# traceback, which would hide the fork hang from the tests above)
def copies(objects: list, path) -> list[list]:
    """``objects`` through ``pickle``, ``copy.deepcopy`` and ``torch.save`` / ``torch.load``
    (each once for the list: the transforms of a copy share one copy of the model)."""
    torch.save(objects, path)
    return [
        pickle.loads(pickle.dumps(objects)),
        copy.deepcopy(objects),
        torch.load(path, weights_only=False),
    ]


@pytest.mark.parametrize("which", ["tiny", pytest.param("packaged", marks=pytest.mark.slow)])
def test_pickle_deepcopy_and_torch_save_before_and_after_first_use(model, tmp_path, which):
    def load() -> DRDM:
        return tiny_model(seed=1) if which == "tiny" else DRDM.from_pretrained("default")

    image = images(1)[0]
    fresh = transforms(load())  # never used in this process
    before = copies(fresh, tmp_path / "before.pt")
    model = used(load() if which == "tiny" else model)
    after = copies(transforms(model), tmp_path / "after.pt")
    originals = transforms(model)
    expected = [apply(t, image, 3) for t in originals]
    assert all(not torch.equal(e, image) for e in expected)
    assert all(len(group) == len(originals) for group in before)
    for group in after:  # the copies deform exactly alike
        assert [type(t) for t in group] == [type(t) for t in originals]
        for transform, reference in zip(group, expected, strict=True):
            torch.testing.assert_close(apply(transform, image, 3), reference, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_torch_dataloader_spawn_and_forkserver_after_use(model, context):
    dataset = Images(DRDMDeform(used(model), level=4, seed=0))
    loader = DataLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context=context, timeout=120
    )
    check_batches(list(loader))


@pytest.mark.slow
def test_monai_dataloader_spawn_after_use(model):
    pytest.importorskip("monai")
    from monai.data import DataLoader as MonaiLoader
    from monai.data import Dataset as MonaiDataset

    from drdm.adapters.monai import DRDMDeformd

    dataset = MonaiDataset(monai_samples(), DRDMDeformd(["image"], used(model), level=4))
    loader = MonaiLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn", timeout=120
    )
    check_batches([torch.as_tensor(batch["image"]) for batch in loader])


@pytest.mark.slow
def test_torchio_subjects_loader_spawn_after_use(model):
    tio = pytest.importorskip("torchio")
    from drdm.adapters.torchio import RandomDRDMDeformation

    dataset = tio.SubjectsDataset(subjects(), RandomDRDMDeformation(used(model), level=4))
    loader = tio.SubjectsLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn", timeout=120
    )
    check_batches([batch["image"]["data"][..., 0] for batch in loader])
