"""Data parallelism: how the model is spread over the ranks, and how its state is read and written.

One :class:`DataParallel` per run, chosen once from the process group and ``train.fsdp``:

- ``"none"`` (one process): the model itself.
- ``"ddp"`` (``train.fsdp=false`` under ``torchrun``): every rank holds the whole model and the
  whole optimizer; ``DistributedDataParallel`` averages the gradients during the backward pass,
  ``g = (1/W) sum_r g_r`` over the ``W`` ranks, so every rank applies the same update and the
  ranks stay identical. The model's own ``state_dict()`` is the whole state.
- ``"fsdp"`` (``train.fsdp=true``): FSDP2, the torchtitan way. Every parameter is a ``DTensor``
  sharded along dim 0 (``fully_shard`` per block, then the root); a block's full parameters are
  all-gathered just before its forward and backward and freed after, its gradients are
  reduce-scattered, so a rank keeps ``1/W`` of the weights, gradients and AdamW moments. The model
  is *built* sharded (:func:`build_sharded`: meta device -> shard -> ``to_empty`` -> per-rank
  initialisation), so it never exists in full on one device.

Full-format checkpoints (``train.checkpoint_format=full``) hold full (unsharded) state dicts
whatever the mode, with the same keys as a plain model's ``state_dict()``: under FSDP they are
gathered onto rank 0's CPU when saved (a collective: every rank calls it) and, when loaded, every
rank reads the full dict and keeps its shard (``torch.distributed.checkpoint.state_dict`` with
``full_state_dict=True``). The plain modes use ``state_dict()`` / ``load_state_dict()`` directly.
Sharded checkpoints (the default under FSDP2) are ``hyperconn.train.sharded_checkpoint``'s.
Tensor and pipeline parallelism are ``tensor_parallel`` and ``pipeline``, on the mesh of ``layout``.

FSDP build: random initialisers on a sharded parameter are redirected by :class:`_FullTensorInit`:
the full tensor is drawn on the CPU from the seeded default generator (exactly as the plain build
draws it) and each rank keeps its shard, so one parameter at a time, never the whole model, exists
in full on a device, and the sharded model starts from the same values as the plain one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..model import LanguageModel
from .checkpoint import check_weights, load_weights
from .config import TrainConfig
from .distributed import DistInfo

__all__ = ["DataParallel", "build_sharded", "check_shardable", "shard"]

# in-place random initialisers (nn.init dispatches its own functions, not the Tensor methods)
_RANDOM_INIT = {
    torch.Tensor.normal_,
    torch.Tensor.uniform_,
    torch.Tensor.bernoulli_,
    torch.Tensor.exponential_,
    torch.Tensor.random_,
} | {getattr(nn.init, name) for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")}


class DataParallel:
    """The run's data parallelism: :attr:`mode` is ``"none"`` at world size 1, else ``"fsdp"``
    with ``fsdp`` and ``"ddp"`` without. Every method takes the unwrapped model (the
    ``LanguageModel``, sharded in place under FSDP), never the DDP wrapper."""

    def __init__(self, info: DistInfo, fsdp: bool) -> None:
        self.info = info
        self.mode = "none" if not info.distributed else ("fsdp" if fsdp else "ddp")

    @property
    def sharded(self) -> bool:
        """FSDP: the model must be built by :func:`build_sharded`, its state is gathered / scattered."""
        return self.mode == "fsdp"

    def __repr__(self) -> str:
        return f"DataParallel(mode={self.mode!r}, world_size={self.info.world_size})"

    # --- the module the loop calls ---------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training loop calls: ``DistributedDataParallel(model)`` under DDP; the model
        itself otherwise (an FSDP2 model is its own wrapper: :func:`build_sharded` sharded it in
        place, and a ValueError says so if it was built otherwise)."""
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import FSDPModule

            if not isinstance(model, FSDPModule):
                raise ValueError(
                    f"train.fsdp=true needs the model built sharded (build_sharded), got an unsharded "
                    f"{type(model).__name__}"
                )
        return model

    # --- state dicts -------------------------------------------------------------------------------
    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full weights, keyed as ``model.state_dict()``. FSDP: gathered onto rank 0's CPU (a
        collective: every rank must call it; the other ranks get an empty dict)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            return get_model_state_dict(model, options=_full_options(cpu_offload=True))
        return model.state_dict()

    def load_model_state(self, model: nn.Module, weights: dict[str, torch.Tensor], source: Path | str) -> None:
        """Copy the full ``weights`` into ``model`` (FSDP: each rank keeps its shard); ValueError
        naming ``source`` and the mismatch if they do not fit."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(model, check_weights(model, weights, source), options=_full_options())
        else:
            load_weights(model, weights, source)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The full optimizer state: ``optimizer.state_dict()`` (parameters by index), or under FSDP
        the gathered one on rank 0 (parameters by name; a collective, as :meth:`model_state`)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load what :meth:`optimizer_state` returned (FSDP: each rank keeps its shard)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=_full_options())
        else:
            optimizer.load_state_dict(state)

    def check_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """ValueError unless ``state`` fits ``optimizer``: the same number of parameters per group,
        every entry naming one of them (an index, or under FSDP a parameter name) with AdamW moments
        of that parameter's (full) shape."""
        groups, ours = state.get("param_groups"), optimizer.param_groups
        sizes = [len(g.get("params", ())) for g in groups] if isinstance(groups, list) else None
        if sizes != [len(g["params"]) for g in ours]:
            raise ValueError("the optimizer state does not match the model's parameter groups")
        params = [p for g in ours for p in g["params"]]
        if self.sharded:
            names = {id(p): name for name, p in model.named_parameters()}
            by_key = {names[id(p)]: p for p in params if id(p) in names}
        else:
            by_key = dict(enumerate(params))
        key_type = str if self.sharded else int
        for key, entry in (state.get("state") or {}).items():
            if not isinstance(key, key_type) or key not in by_key:
                raise ValueError(f"the optimizer state names parameter {key!r}, the model has {len(params)}")
            avg = entry.get("exp_avg") if isinstance(entry, dict) else None
            shape = tuple(by_key[key].shape)  # a DTensor's shape is the full one
            if avg is not None and tuple(avg.shape) != shape:
                raise ValueError(
                    f"the optimizer state of parameter {key!r} has shape {tuple(avg.shape)}, the model's is {shape}"
                )


def _full_options(cpu_offload: bool = False):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


# --- the sharded build ----------------------------------------------------------------------------


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 in place: ``fully_shard`` every block, then the root (the root holds what is left:
    the embedding, the final norm, the head, the stream expansion and reduction)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def build_sharded(cfg: TrainConfig, info: DistInfo) -> LanguageModel:
    """Meta build -> :func:`shard` -> ``to_empty`` (only this rank's shards) -> per-rank
    initialisation from ``train.seed``: the same values as ``build.build_plain``'s."""
    with torch.device("meta"):
        model = LanguageModel(cfg.model)
    check_shardable(model, cfg.model.connection.kind)
    shard(model)
    model.to_empty(device=info.device)
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad(), _FullTensorInit():
        model.reset_parameters()
    return model


def check_shardable(model: nn.Module, kind: str) -> None:
    """FSDP2 shards every parameter along dim 0 and refuses 0-d ones: say so before it starts."""
    scalars = [name for name, p in model.named_parameters() if p.dim() == 0]
    if scalars:
        raise ValueError(
            f"train.fsdp=true cannot shard connection kind {kind!r}: FSDP2 refuses 0-d parameters "
            f"({', '.join(scalars[:3])}{', ...' if len(scalars) > 3 else ''}); train it with DDP (train.fsdp=false)"
        )


class _FullTensorInit(TorchFunctionMode):
    """In-place initialisation of a DTensor from a full value: a random initialiser draws the full
    tensor on the CPU and a ``copy_`` of a plain tensor takes it as the full value; each rank keeps
    its shard. Other operations (``fill_``, ``zero_``, ...) act on the shards directly."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor, distribute_tensor

        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if not isinstance(target, DTensor):
            return func(*args, **kwargs)
        if func is torch.Tensor.copy_ and not isinstance(args[1], DTensor):
            full = args[1].expand(target.shape)  # a full initial value (a connection's biases)
        elif func in _RANDOM_INIT:
            full = torch.empty(target.shape, dtype=target.dtype, device="cpu")
            if args:
                func(full, *args[1:], **kwargs)
            else:
                func(**{**kwargs, "tensor": full})
        else:
            return func(*args, **kwargs)
        full = full.to(device=target.to_local().device, dtype=target.dtype)
        piece = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
        target.to_local().copy_(piece)
        return target
