"""Tensor + sequence parallelism (``train.tensor_parallel=K``): a plan applied to the unchanged
model with ``torch.distributed.tensor.parallel``, the torchtitan way.

Per block, over the ``tp`` mesh dimension of ``K`` ranks::

    streams x (B, T/K, n, C)  sequence-sharded (each rank its T/K tokens), plain local tensors
    conn(x, F): H_pre, H_post, H_res per token on the local tokens; no communication
      F = Attn(Norm(u)):  Norm on the local tokens; the branch input all-gathered over tokens
                          (PrepareModuleInput Shard(1) -> Replicate); q/k/v column-sharded
                          (each rank n_heads/K heads, n_kv_heads/K kv heads); o_proj row-sharded,
                          its output reduce-scattered back to the local tokens (Shard(1))
      F = MLP(Norm(u)):   the same: gate/up column-sharded, down row-sharded, reduce-scatter
    ends: embed + expand computed on the whole sequence (padded at its end to a multiple of K, the
          padding unseen by the causal attention and cut from the logits), then each rank keeps its tokens;
          readout + norm + head on the local tokens; the logits all-gathered over tokens
          (backward: each rank's slice), so every tp rank computes the same loss

Attention and MLP weights are DTensors sharded over ``tp``. Every other parameter (the
connections', the norms', the ends', the embedding and head) is replicated as a plain tensor on
each tp rank and sees only that rank's tokens (or heads, for q/k norms): its gradient is a partial
sum, all-reduced over ``tp`` after the backward pass (:meth:`TensorParallel.sync_gradients`), so
every tp rank applies the same update (Megatron's sequence-parallel rule). With ``dp > 1`` every
gradient (a DTensor's local shard included) is then averaged over ``dp`` (DDP's math, one
all-reduce per tensor after the backward pass, not bucketed). The global gradient norm for
clipping sums the squared local norms of the sharded gradients over ``tp`` and counts the
replicated ones once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..model import LanguageModel
from .layout import Layout
from .parallel import _RANDOM_INIT, _FullTensorInit


class _GatherTokens(torch.autograd.Function):
    """All-gather along dim 1 over ``group``; backward: this rank's slice of the gradient (every
    rank computes the same loss from the gathered tensor, so its gradient is the same everywhere)."""

    @staticmethod
    def forward(ctx, x, group, rank, size):
        ctx.rank, ctx.size = rank, size
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):
        return grad.chunk(ctx.size, dim=1)[ctx.rank].contiguous(), None, None, None


def apply_tensor_parallel(model: LanguageModel, layout: Layout) -> LanguageModel:
    """Shard ``model`` in place over ``layout``'s ``tp`` mesh dimension (module doc)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        parallelize_module,
    )

    mesh, k = layout.mesh["tp"], layout.tp
    blocks = model.blocks.values() if isinstance(model.blocks, nn.ModuleDict) else model.blocks  # a stage's
    for block in blocks:
        plan = {
            "attn": PrepareModuleInput(
                input_layouts=(Shard(1), None, None, None), desired_input_layouts=(Replicate(), None, None, None)
            ),
            "attn.q_proj": ColwiseParallel(),
            "attn.k_proj": ColwiseParallel(),
            "attn.v_proj": ColwiseParallel(),
            "attn.o_proj": RowwiseParallel(output_layouts=Shard(1)),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "mlp.gate_proj": ColwiseParallel(),
            "mlp.up_proj": ColwiseParallel(),
            "mlp.down_proj": RowwiseParallel(output_layouts=Shard(1)),
        }
        parallelize_module(block, mesh, plan)
        block.attn.n_heads //= k  # the heads this rank computes (the view in Attention.forward)
        block.attn.n_kv_heads //= k
    rank, group = layout.tp_rank, layout.group("tp")
    length: dict[str, int] = {}  # this model's current sequence length (a window may be short)

    def pad(_module, args):  # a sequence tp does not divide gets padding at its end (causal: unseen)
        idx = args[0]
        length["T"] = idx.shape[1]
        extra = -idx.shape[1] % k
        return (torch.nn.functional.pad(idx, (0, extra)), *args[1:]) if extra else None

    def gather(_module, _args, out):  # a pipeline's last stage never saw the length: the caller trims
        return _GatherTokens.apply(out, group, rank, k)[:, : length.get("T", out.shape[1] * k)]

    if model.embed is not None:  # a pipeline stage may hold neither end
        model.embed.register_forward_pre_hook(pad)
        model.expand.register_forward_hook(lambda _m, _i, out: out.chunk(k, dim=1)[rank])
    if model.head is not None:
        model.head.register_forward_hook(gather)
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


class TensorParallel(nn.Module):
    """What the loop calls under tensor parallelism: the sharded model, plus the gradient
    synchronisation and clipping :func:`hyperconn.train.step.backward_step` asks for.

    With ``fsdp`` (``train.fsdp=true`` and ``dp > 1``) the model is also ``fully_shard``-ed over
    ``dp`` (2-D: the tp-sharded weights become (dp, tp) DTensors, the replicated ones dp-sharded);
    FSDP2 then reduce-scatters (and averages) every gradient over ``dp`` itself, and the replicated
    parameters' gradient shards are all-reduced over ``tp`` as without it."""

    def __init__(self, model: LanguageModel, layout: Layout) -> None:
        super().__init__()
        self.module, self.layout = model, layout
        self.tp_group = layout.group("tp")
        self.dp_group = layout.group("dp") if layout.dp > 1 else None
        self.fsdp = layout.fsdp and layout.dp > 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _params(self):
        """``(tp-sharded, tp-replicated)`` parameters that have a gradient."""
        sharded, replicated = [], []
        for p in self.module.parameters():
            if p.grad is not None:
                names = getattr(getattr(p, "device_mesh", None), "mesh_dim_names", None) or ()
                (sharded if "tp" in names else replicated).append(p)
        return sharded, replicated

    @torch.no_grad()
    def sync_gradients(self) -> None:
        sharded, replicated = self._params()
        for p in replicated:
            dist.all_reduce(_local(p.grad), group=self.tp_group)
        if self.dp_group is not None and not self.fsdp:  # FSDP2 reduce-scattered over dp already
            for p in sharded + replicated:
                g = _local(p.grad)
                dist.all_reduce(g, group=self.dp_group)
                g.div_(self.layout.dp)

    @torch.no_grad()
    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        total = self.grad_norm_squared().sqrt()
        self.scale_gradients(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total

    @torch.no_grad()
    def grad_norm_squared(self) -> torch.Tensor:
        """The squared norm of every gradient this model's ranks hold between them (a pipeline
        stage's: the pipeline sums it over ``pp``)."""
        sharded, replicated = self._params()
        device = self.layout_device()
        split = torch.zeros((), dtype=torch.float32, device=device)  # summed over tp (and dp under FSDP)
        whole = torch.zeros((), dtype=torch.float32, device=device)  # equal on the tp ranks
        for p in sharded:
            split += _local(p.grad).float().pow(2).sum()
        for p in replicated:
            whole += _local(p.grad).float().pow(2).sum()
        dist.all_reduce(split, group=self.tp_group)
        if self.fsdp:
            both = torch.stack([split, whole])
            dist.all_reduce(both, group=self.dp_group)
            split, whole = both[0], both[1]
        return split + whole

    @torch.no_grad()
    def scale_gradients(self, coef: torch.Tensor) -> None:
        sharded, replicated = self._params()
        for p in sharded + replicated:
            g = _local(p.grad)
            g.mul_(coef.to(g.dtype))

    def layout_device(self) -> torch.device:
        return _local(next(self.module.parameters())).device


def build_tensor_parallel(cfg, layout: Layout, device: torch.device) -> tuple[LanguageModel, TensorParallel]:
    """``(raw_model, model the loop calls)``, built the torchtitan way: on the meta device, the tp
    plan (and FSDP2 over ``dp``) applied, ``to_empty`` allocating only this rank's part, then
    ``reset_parameters()`` from ``train.seed`` with every random tensor drawn in full on the CPU,
    one at a time, and cut to this rank's part (:class:`_CpuDraws`): the plain build's values,
    without the whole model ever existing on one rank."""
    from .parallel import check_shardable

    with torch.device("meta"):
        model = LanguageModel(cfg.model)
    apply_tensor_parallel(model, layout)
    if layout.fsdp and layout.dp > 1:  # 2-D: FSDP2 over dp on top of the tp plan (torchtitan's order)
        from torch.distributed.fsdp import fully_shard

        check_shardable(model, cfg.model.connection.kind)
        mesh = layout.mesh["dp"]
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    model.to_empty(device=device)
    if cfg.model.tie_embeddings and model.head.weight is not model.embed.weight:
        if layout.fsdp and layout.dp > 1:  # FSDP2 keeps its shared parameters tied itself
            raise ValueError(
                "train.tensor_parallel with train.fsdp=true lost the tied head: set model.tie_embeddings=false"
            )
        model.head.weight = model.embed.weight  # to_empty allocates each module's parameters anew
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad(), _CpuDraws():
        model.reset_parameters()
    return model, TensorParallel(model, layout)


class _CpuDraws(_FullTensorInit):
    """:class:`~hyperconn.train.parallel._FullTensorInit` (a DTensor gets the full CPU draw, cut to
    its shard), and a plain tensor off the CPU its draw from the CPU generator too, so every
    parameter equals ``build.build_plain``'s (which draws everything on the CPU)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        plain = isinstance(target, torch.Tensor) and not hasattr(target, "device_mesh")
        if plain and target.device.type != "cpu" and func in _RANDOM_INIT:
            full = torch.empty(target.shape, dtype=target.dtype, device="cpu")
            if args:
                func(full, *args[1:], **kwargs)
            else:
                func(**{**kwargs, "tensor": full})
            target.copy_(full.to(target.device))
            return target
        return super().__torch_function__(func, types, args, kwargs)
