"""The process group, this rank's device and the few collectives the loop uses.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same script runs on every rank: :func:`setup` joins
the process group (gloo on CPU, nccl on GPU) and returns the rank's :class:`DistInfo`. Each rank
reads its own slice of every batch (``TokenBatcher(rank, world_size)``); only rank 0 writes
files. How the model itself is made data-parallel (DDP or FSDP2) is ``parallel``'s concern.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True if setup() created the process group (teardown destroys it)
    group: object = None  # the process group of the collectives below (None: every rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


DEVICE_HINT = "auto, cpu, cuda, cuda:<index> or mps"


def check_device(preference, option: str = "train.device") -> None:
    """ValueError naming ``option`` unless ``preference`` is ``"auto"`` or a torch device string
    (whether the device exists on this machine is checked by :func:`pick_device`)."""
    if preference == "auto":
        return
    try:
        if not isinstance(preference, str):
            raise TypeError
        torch.device(preference)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} must be {DEVICE_HINT}, got {preference!r}") from None


def pick_device(preference: str, local_rank: int, option: str = "train.device") -> torch.device:
    """The device of this rank: ``"auto"`` is ``cuda:<local_rank>`` when CUDA is available, else the CPU.
    ``option`` names the setting in error messages (``--device`` for ``hyperconn generate``)."""
    check_device(preference, option)
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option}={preference!r} but CUDA is not available on this machine; use {option}=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option}={preference!r} but MPS is not available on this machine; use {option}=cpu")
    return device


def setup(device_preference: str = "auto") -> DistInfo:
    """Join (or create, from the torchrun environment) the process group; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        world, rank, owns = dist.get_world_size(), dist.get_rank(), False
    elif world > 1:
        device = pick_device(device_preference, local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, owns = dist.get_rank(), True
    else:
        rank, owns = 0, False
    device = pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank, local_rank, world, device, owns)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``value`` over the ranks (``value`` itself at world size 1)."""
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=info.group)
    return value


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (nothing at world size 1)."""
    if info.distributed:
        dist.barrier(group=info.group)
