"""Process group setup and model wrapping for multi-process training.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same script runs data-parallel: DDP by default (gloo
on CPU, nccl on GPU) or FSDP2 (``fully_shard`` per block, then the root) with ``train.fsdp``.
Each rank reads its own slice of every batch (``TokenBatcher(rank, world_size)``); only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True if setup() created the process group (teardown destroys it)

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


def wrap(model: nn.Module, info: DistInfo, fsdp: bool) -> nn.Module:
    """DDP or FSDP2 around ``model`` when distributed; the model itself otherwise."""
    if not info.distributed:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
