"""The run's components: its data (prepared and checked against the batch) and its model (built
plain, or with FSDP on the meta device, sharded, then materialised and initialised per rank).

FSDP build (torchtitan's pattern): ``LanguageModel`` is constructed under ``torch.device("meta")``
(no memory), every block and then the root are ``fully_shard``-ed, ``to_empty`` allocates only
this rank's shards, and ``reset_parameters()`` initialises them. Random initialisers on a sharded
parameter are redirected by :class:`_FullTensorInit`: the full tensor is drawn on the CPU from the
seeded default generator (exactly as the plain build draws it) and each rank keeps its shard, so
one parameter at a time, never the whole model, exists in full on a device, and the sharded model
starts from the same values as the plain one with the same seed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..data import PreparedData, prepare_data
from ..data.batching import rank_slice
from ..model import LanguageModel
from . import distributed as D
from .config import TrainConfig

# in-place random initialisers (nn.init dispatches its own functions, not the Tensor methods)
_RANDOM_INIT = {
    torch.Tensor.normal_,
    torch.Tensor.uniform_,
    torch.Tensor.bernoulli_,
    torch.Tensor.exponential_,
    torch.Tensor.random_,
} | {getattr(nn.init, name) for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")}


def prepare_run_data(cfg: TrainConfig, info: D.DistInfo) -> PreparedData:
    """Prepare the data (where it builds a shared cache, rank 0 builds it and the others then read
    it; shards and streams need no wait), fill in the vocabulary size, and check the splits hold a
    batch; ValueError naming what is too small."""
    t = cfg.train
    shared = cfg.data.rank0_builds_cache
    if shared and not info.is_main:
        D.barrier(info)
    data = prepare_data(cfg.data)
    if shared and info.is_main:
        D.barrier(info)
    vocab = data.tokenizer.vocab_size
    if cfg.model.vocab_size is None:
        cfg.model.vocab_size = vocab
    elif cfg.model.vocab_size < vocab:
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's vocabulary ({vocab} ids): "
            "raise model.vocab_size or leave it unset to take the tokenizer's"
        )
    need = t.batch_size * t.seq_len + 1
    # a stream (data.train is None) checks its rank's share as it reads (StreamingBatcher)
    lo, hi = (0, need) if data.train is None else rank_slice(int(data.train.shape[0]), info.rank, info.world_size)
    if hi - lo < need:
        share = f" (rank {info.rank}'s share of {info.world_size}: {hi - lo})" if info.distributed else ""
        raise ValueError(
            f"the training split has {data.train.shape[0]} tokens{share}, fewer than one batch of "
            f"train.batch_size x train.seq_len + 1 = {need}; use more data or a smaller batch"
        )
    val_need = t.seq_len + 1
    if data.n_val_tokens < val_need * info.world_size:
        raise ValueError(
            f"evaluation would see no batch: {data.n_val_tokens} validation tokens over {info.world_size} rank(s), "
            f"each needs at least train.seq_len + 1 = {val_need}; use more validation data or a shorter seq_len"
        )
    return data


def build_model(cfg: TrainConfig, info: D.DistInfo) -> tuple[nn.Module, nn.Module]:
    """``(raw_model, model)``: the LanguageModel with ``train.seed``'s initialisation, and the
    module the loop calls (DDP-wrapped, FSDP-sharded (the same object), or the model itself)."""
    seed = cfg.train.seed
    if cfg.train.init_from is not None:
        model = build_from_hf(cfg).to(info.device)
        return model, D.wrap(model, info, fsdp=False)
    if cfg.train.fsdp and info.distributed:
        model = build_sharded(cfg, info)
        return model, model
    model = build_plain(cfg, seed).to(info.device)
    return model, D.wrap(model, info, fsdp=False)


def build_plain(cfg: TrainConfig, seed: int) -> LanguageModel:
    """The model on the CPU, initialised by ``reset_parameters()`` from the freshly seeded
    generator: the same draws, in the same order, as :func:`build_sharded` makes."""
    model = LanguageModel(cfg.model)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.reset_parameters()
    return model


def build_from_hf(cfg: TrainConfig, pretrained: bool = True) -> nn.Module:
    """``train.init_from = "hf:<dir>"``: the checkpoint converted by ``hyperconn.hf`` to
    ``model.connection`` with the function-preserving init (``pretrained=False``: the architecture
    alone, for a run whose checkpoint supplies every weight)."""
    from ..hf import ConversionConfig, HFLanguageModel  # the hf extra: imported only for such runs
    from ..hf.lm import parse_init_from

    conn = cfg.model.connection
    spec = ConversionConfig(conn.kind, conn.streams, "preserve", dict(conn.options))
    model = HFLanguageModel.from_directory(parse_init_from(cfg.train.init_from), spec, pretrained)
    if cfg.model.vocab_size is not None and model.vocab_size < cfg.model.vocab_size:
        raise ValueError(
            f"{cfg.train.init_from}: the model has {model.vocab_size} token ids, fewer than its tokenizer's "
            f"{cfg.model.vocab_size}"
        )
    return model


def build_sharded(cfg: TrainConfig, info: D.DistInfo) -> LanguageModel:
    """Meta build -> ``fully_shard`` per block and root -> ``to_empty`` -> per-rank initialisation."""
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        model = LanguageModel(cfg.model)
    check_shardable(model, cfg.model.connection.kind)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
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
        shard = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
        target.to_local().copy_(shard)
        return target
