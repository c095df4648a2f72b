"""Data-parallel training helpers (``torch.distributed``), usable without a process group.

A run started by ``torchrun`` (or ``python -m torch.distributed.run``) has the environment
variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process
group (``nccl`` on CUDA, ``gloo`` on the CPU) and each process uses ``cuda:LOCAL_RANK`` on a
GPU machine. Without them (or with ``WORLD_SIZE=1``) everything here is a no-op for a single
process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..device import resolve_device
from ..errors import InputError

__all__ = ["DistContext", "setup", "teardown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is active."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op for one process)."""
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def mean(self, values: Tensor) -> Tensor:
        """Average a small tensor over all processes (returns a copy on the CPU)."""
        if not self.distributed:
            return values.detach().cpu().clone()
        buf = values.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return (buf / self.world_size).cpu()

    def gather_bytes(self, data: Tensor) -> list[Tensor]:
        """Collect a 1D ``uint8`` tensor of the same length from every process, in rank order
        (returned on the CPU)."""
        data = data.detach().reshape(-1).to(torch.uint8)
        if not self.distributed:
            return [data.cpu().clone()]
        local = data.to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return [p.cpu() for p in parts]


def setup(device: str = "auto") -> DistContext:
    """Join the process group if launched by ``torchrun`` and pick this process' device.

    ``device`` is ``auto``, ``cpu`` or ``cuda`` (see :func:`drdm.device.resolve_device`); in a
    distributed CUDA run each process takes ``cuda:LOCAL_RANK``.
    """
    chosen = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=chosen)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA device(s)"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        if chosen.type == "cuda":
            dist.init_process_group(backend, device_id=chosen)
        else:
            dist.init_process_group(backend)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=chosen)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
