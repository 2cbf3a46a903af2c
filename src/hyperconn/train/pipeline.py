"""Pipeline parallelism (``train.pipeline_parallel=P``) with ``torch.distributed.pipelining``.

Each rank builds only its stage (meta device, pruned, ``to_empty``, :func:`init_stage`: the same
values as one process): stage ``s`` of ``P`` owns blocks ``s L/P .. (s+1) L/P - 1`` (the
``blocks`` list becomes a ``ModuleDict`` keyed by the original indices, so every parameter keeps
the plain model's name: checkpoints are interchangeable), the first stage also the embedding and
the expand, the last the readout, the final norm and the head. Stage boundaries carry the streams
``(batch, tokens, n, C)``, ``n`` times the activation of a plain transformer's boundary.

One optimiser step is ``ScheduleGPipe`` (``train.pipeline_schedule=gpipe``, the default: every
micro-batch's forward, then every backward) or ``Schedule1F1B`` (``1f1b``: at most ``P``
micro-batches in flight per stage, so less activation memory; needs ``grad_accum >= P``) over
``train.grad_accum`` micro-batches of ``train.batch_size`` sequences each (the micro-batches of one
process, in the same order): the last stage computes each micro-batch's cross-entropy and the
schedule scales the gradients by ``1/grad_accum``, so ``L = (1/M) sum_m CE_m`` as in
:mod:`hyperconn.train.step`. The loss is then broadcast from the last stage over the ``pp`` group;
with ``dp > 1`` every gradient is averaged over ``dp`` (one all-reduce per tensor); the clipping
norm sums the stages' squared norms over ``pp``.

Evaluation (:class:`PipelineEval`) runs the stages in turn on the whole batch (point-to-point
sends of the streams) and broadcasts the last stage's logits over ``pp``, so every rank computes
the same loss; its ``H_res`` summaries cover the connections of rank 0's stage.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..model import LanguageModel
from .layout import Layout
from .precision import autocast


def stage_blocks(n_layers: int, stages: int, stage: int) -> range:
    per = n_layers // stages
    return range(stage * per, (stage + 1) * per)


def prune_to_stage(model: LanguageModel, stages: int, stage: int) -> LanguageModel:
    """Keep only stage ``stage``'s parts of ``model`` (module doc), in place."""
    owned = stage_blocks(len(model.blocks), stages, stage)
    model.blocks = nn.ModuleDict({str(i): model.blocks[i] for i in owned})
    if stage > 0:
        model.embed = None
        model.expand = None
    if stage < stages - 1:
        model.readout = None
        model.norm = None
        model.head = None
    return model


class StageForward(nn.Module):
    """The forward pass of one stage of a pruned :class:`LanguageModel`: token ids or streams in,
    streams or logits out (the same operations as ``LanguageModel.forward``)."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if m.embed is not None:
            x = m.expand(m.embed(x))
            if m.stream_dtype is not None:
                x = x.to(m.stream_dtype)
        for block in m.blocks.values():
            x = block(x, m.rope, 0, None)
        if m.head is None:
            return x
        y = m.readout(x)
        if y.dtype != m.norm.weight.dtype:
            y = y.to(m.norm.weight.dtype)
        return m.head(m.norm(y))


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


class Pipeline(nn.Module):
    """What the loop calls under pipeline parallelism: :meth:`forward_backward` runs one step's
    schedule; :attr:`eval_model` the evaluation forward."""

    def __init__(
        self, model: LanguageModel, layout: Layout, device: torch.device, micro_batches: int, schedule: str = "gpipe"
    ) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        super().__init__()
        self.module, self.layout, self.device = model, layout, device
        self.stage_fn = StageForward(model)
        self.pp_group = layout.group("pp")
        self.dp_group = layout.group("dp") if layout.dp > 1 else None
        self.fsdp = layout.fsdp and layout.dp > 1
        self.tp = None
        if layout.tp > 1:  # each stage tensor-parallel: its gradient sync and norm are TensorParallel's
            from .tensor_parallel import TensorParallel

            self.tp = TensorParallel(model, layout)
        if self.fsdp:  # FSDP2 over dp: each block, then the stage's forward module as the root
            from torch.distributed.fsdp import fully_shard

            mesh = layout.mesh["dp"]
            for block in model.blocks.values():
                fully_shard(block, mesh=mesh)
            fully_shard(self.stage_fn, mesh=mesh)
        s, p = layout.pp_rank, layout.pp
        self.first, self.last = s == 0, s == p - 1
        self.stage = PipelineStage(self.stage_fn, s, p, device, group=self.pp_group)
        kind = Schedule1F1B if schedule == "1f1b" else ScheduleGPipe
        self.schedule = kind(self.stage, n_microbatches=micro_batches, loss_fn=_ce)
        self.eval_model = PipelineEval(self)

    def forward(self, *args, **kwargs):
        raise RuntimeError("a pipeline stage is called through forward_backward() or eval_model")

    def forward_backward(self, micro_batches, precision: str, grad_clip: float | None):
        """``(L detached, |g|)`` of one step (module doc), the same on every rank of the pipeline."""
        x = torch.cat([mx for mx, _ in micro_batches])
        y = torch.cat([my for _, my in micro_batches])
        losses: list[torch.Tensor] = []
        with autocast(self.device, precision):
            if self.first:
                self.schedule.step(x)
            elif self.last:
                self.schedule.step(target=y, losses=losses)
            else:
                self.schedule.step()
        total = torch.stack([loss.detach().float() for loss in losses]).mean() if self.last else torch.zeros(())
        total = total.to(self.device)
        dist.broadcast(total, group=self.pp_group, group_src=self.layout.pp - 1)
        if self.tp is not None:
            self.tp.sync_gradients()
        else:
            self._sync_gradients()
        if grad_clip is None:
            return total, None
        return total, self._clip(grad_clip)

    @torch.no_grad()
    def _sync_gradients(self) -> None:
        if self.dp_group is None or self.fsdp:  # FSDP2 reduce-scattered (and averaged) over dp itself
            return
        for p in self.module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=self.dp_group)
                p.grad.div_(self.layout.dp)

    @torch.no_grad()
    def _clip(self, max_norm: float) -> torch.Tensor:
        if self.tp is not None:
            squared = self.tp.grad_norm_squared()
            dist.all_reduce(squared, group=self.pp_group)
            total = squared.sqrt()
            self.tp.scale_gradients(torch.clamp(max_norm / (total + 1e-6), max=1.0))
            return total
        grads = [_local(p.grad) for p in self.module.parameters() if p.grad is not None]
        local = torch.zeros((), dtype=torch.float32, device=self.device)
        for g in grads:
            local += g.float().pow(2).sum()
        if self.fsdp:  # each dp rank holds a shard of every gradient
            dist.all_reduce(local, group=self.dp_group)
        dist.all_reduce(local, group=self.pp_group)
        total = local.sqrt()
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))
        return total


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _peer(layout: Layout, stage: int) -> int:
    """The global rank of pipeline stage ``stage`` in this rank's (dp, tp) coordinate."""
    return (stage * layout.dp + layout.dp_rank) * layout.tp + layout.tp_rank


_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _send(t: torch.Tensor, dst: int) -> None:
    header = torch.tensor([_DTYPES.index(t.dtype), t.dim(), *t.shape], dtype=torch.int64, device=t.device)
    dist.send(torch.tensor([header.numel()], dtype=torch.int64, device=t.device), dst)
    dist.send(header, dst)
    dist.send(t.contiguous(), dst)


def _recv(src: int, device: torch.device) -> torch.Tensor:
    size = torch.zeros(1, dtype=torch.int64, device=device)
    dist.recv(size, src)
    header = torch.zeros(int(size), dtype=torch.int64, device=device)
    dist.recv(header, src)
    dtype, ndim = _DTYPES[int(header[0])], int(header[1])
    out = torch.empty(tuple(int(v) for v in header[2 : 2 + ndim]), dtype=dtype, device=device)
    dist.recv(out, src)
    return out


class PipelineEval(nn.Module):
    """Evaluation forward through the stages in turn (no micro-batching, no autograd): every rank
    of the pipeline returns the last stage's logits."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__()
        self.stage_fn = pipeline.stage_fn
        self._pipeline = [pipeline]  # not a submodule: its parameters are the stage's, once

    @torch.no_grad()
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pipe = self._pipeline[0]
        layout, s = pipe.layout, pipe.layout.pp_rank
        x = idx if pipe.first else _recv(_peer(layout, s - 1), idx.device)
        out = self.stage_fn(x)
        if not pipe.last:
            _send(out, _peer(layout, s + 1))
        last = _peer(layout, layout.pp - 1)
        if pipe.last:
            for stage in range(layout.pp - 1):
                _send(out, _peer(layout, stage))
        else:
            out = _recv(last, idx.device)
        return out[:, : idx.shape[1]]  # under TP a short window was padded on the first stage


def build_pipeline(cfg, layout: Layout, device: torch.device) -> tuple[LanguageModel, Pipeline]:
    """``(this rank's pruned model, the pipeline the loop calls)``: built on the meta device,
    pruned, allocated for this stage only, then initialised by :func:`init_stage` to the values
    one process starts from."""
    with torch.device("meta"):
        model = LanguageModel(cfg.model)
    prune_to_stage(model, layout.pp, layout.pp_rank)
    if layout.tp > 1:  # TP within each stage: the same plan as without pipeline stages
        from .tensor_parallel import apply_tensor_parallel

        apply_tensor_parallel(model, layout)
    model.to_empty(device=device)
    init_stage(model, cfg)
    if layout.fsdp and layout.dp > 1:
        from .parallel import check_shardable

        check_shardable(model, cfg.model.connection.kind)
    return model, Pipeline(model, layout, device, cfg.train.grad_accum, cfg.train.pipeline_schedule)


def init_stage(stage: LanguageModel, cfg) -> None:
    """Give a pruned stage ``build.build_plain``'s values without building the whole model:

    1. the whole model's ``reset_parameters()`` is run on the meta device under
       :class:`_RecordDraws`, which records each random initialiser (in order) instead of running it;
    2. from ``train.seed``, every recorded draw is made in full on the CPU (the same draws, in the
       same order, as the plain build) and kept where the stage owns that parameter;
    3. the stage's own ``reset_parameters()`` runs with the random initialisers skipped
       (:class:`_SkipDraws`): the deterministic ones (fills, copies, the rotary tables, constants
       derived from the parameters) on this stage's tensors."""
    from .parallel import _RANDOM_INIT

    with torch.device("meta"):
        whole = LanguageModel(cfg.model)
    names = {id(p): name for name, p in whole.named_parameters()}
    owned = dict(stage.named_parameters())
    draws: list[tuple] = []
    with torch.no_grad(), _RecordDraws(_RANDOM_INIT, names, draws):
        whole.reset_parameters()
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad():
        for name, shape, dtype, func, args, kwargs in draws:
            full = torch.empty(shape, dtype=dtype, device="cpu")
            func(full, *args, **kwargs)
            if name in owned:
                _copy_full(owned[name], full)
    with torch.no_grad(), _SkipDraws(_RANDOM_INIT):
        stage.reset_parameters()


def _copy_full(target: torch.Tensor, full: torch.Tensor) -> None:
    """``target = full``, where ``target`` may be a DTensor (tensor parallelism): its part of ``full``."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        local = target.to_local()
        piece = distribute_tensor(full.to(local.device), target.device_mesh, target.placements, src_data_rank=None)
        local.copy_(piece.to_local())
    else:
        target.copy_(full.to(target.device))


class _RecordDraws(TorchFunctionMode):
    def __init__(self, random_init, names: dict, draws: list) -> None:
        super().__init__()
        self.random_init, self.names, self.draws = random_init, names, draws

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.random_init:
            target = args[0] if args else kwargs.pop("tensor")
            name = self.names.get(id(target))
            self.draws.append((name, tuple(target.shape), target.dtype, func, tuple(args[1:]), kwargs))
            return target
        return func(*args, **kwargs)


class _SkipDraws(TorchFunctionMode):
    def __init__(self, random_init) -> None:
        super().__init__()
        self.random_init = random_init

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.random_init:
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))
