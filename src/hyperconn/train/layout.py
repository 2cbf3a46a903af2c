"""The run's layout: how the world's ranks split into data (``dp``), tensor (``tp``) and pipeline
(``pp``) parallel groups, on one ``DeviceMesh`` of shape ``(pp, dp, tp)``.

``world = pp x dp x tp``; ``train.tensor_parallel`` is ``tp``, ``train.pipeline_parallel`` is
``pp``, and data parallelism takes the rest. Ranks are laid out ``tp`` fastest (a rank's ``tp``
neighbours are adjacent ranks, the torchtitan order), so
``rank = (pp_rank * dp + dp_rank) * tp + tp_rank``. The ranks of one ``dp`` coordinate read the
same batches (:meth:`Layout.data_info`); the data-parallel degree sets the global batch,
``dp x train.batch_size x train.grad_accum`` sequences.

:func:`check_layout` is the edge check: every layout that cannot run is refused with one line
naming the value and what is allowed, before anything is built or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .distributed import DistInfo

SCHEDULES = ("gpipe", "1f1b")  # train.pipeline_schedule: torch.distributed.pipelining's ScheduleGPipe, Schedule1F1B


@dataclass
class Layout:
    world: int
    tp: int = 1
    pp: int = 1
    fsdp: bool = False
    rank: int = 0
    mesh: object = field(default=None, repr=False)  # the DeviceMesh (None at world size 1)

    @property
    def dp(self) -> int:
        return self.world // (self.tp * self.pp)

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def dp_rank(self) -> int:
        return (self.rank // self.tp) % self.dp

    @property
    def pp_rank(self) -> int:
        return self.rank // (self.tp * self.dp)

    @property
    def sharded(self) -> bool:
        """The model is split over ranks (FSDP2, TP or PP): sharded checkpoints by default."""
        return self.tp > 1 or self.pp > 1 or (self.fsdp and self.world > 1)

    def describe(self) -> dict:
        mode = "fsdp" if self.fsdp and self.dp > 1 else ("ddp" if self.dp > 1 else "none")
        return {"world_size": self.world, "dp": self.dp, "tp": self.tp, "pp": self.pp, "dp_mode": mode}

    def group(self, dim: str):
        """The process group of mesh dimension ``dim`` (``"dp"``, ``"tp"``, ``"pp"``)."""
        return self.mesh[dim].get_group()

    def data_info(self, info: DistInfo) -> DistInfo:
        """``info`` as the data sees it: the ``dp`` coordinate and degree, collectives over ``dp``."""
        if self.tp == 1 and self.pp == 1:
            return info
        group = self.group("dp") if self.dp > 1 else None
        return DistInfo(self.dp_rank, info.local_rank, self.dp, info.device, False, group)


def make_layout(t, info: DistInfo, model_cfg) -> Layout:
    """The layout of settings ``t`` (``cfg.train``) on ``info``'s world, its mesh built; ValueError
    (one line) if it cannot run."""
    check_layout(t, model_cfg, info.world_size)
    layout = Layout(info.world_size, t.tensor_parallel, t.pipeline_parallel, t.fsdp, info.rank)
    if layout.tp > 1 or layout.pp > 1:
        from torch.distributed.device_mesh import init_device_mesh

        layout.mesh = init_device_mesh(
            info.device.type, (layout.pp, layout.dp, layout.tp), mesh_dim_names=("pp", "dp", "tp")
        )
    return layout


def check_settings(t, model_cfg) -> None:
    """What does not depend on the world size: the degrees, their fit to the model, and what they
    compose with (``cfg.train``, ``cfg.model``); ValueError naming the value and what is allowed."""
    from .resume import FORMATS

    if t.checkpoint_format not in FORMATS:
        raise ValueError(f"train.checkpoint_format must be one of {', '.join(FORMATS)}, got {t.checkpoint_format!r}")
    for name in ("tensor_parallel", "pipeline_parallel"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"train.{name} must be an integer >= 1, got {value!r}")
    if t.pipeline_schedule not in SCHEDULES:
        raise ValueError(f"train.pipeline_schedule must be one of {', '.join(SCHEDULES)}, got {t.pipeline_schedule!r}")
    tp, pp = t.tensor_parallel, t.pipeline_parallel
    if tp == 1 and pp == 1:
        return
    what = f"train.tensor_parallel={tp}" if tp > 1 else f"train.pipeline_parallel={pp}"
    if tp > 1 and pp > 1 and t.fsdp:
        raise ValueError(
            f"train.tensor_parallel={tp} with train.pipeline_parallel={pp} composes with DDP-style data "
            "parallelism only (FSDP2 on a 3-D mesh is not supported yet): set train.fsdp=false"
        )
    if t.init_from is not None:
        raise ValueError(f"{what} trains the native model only, not train.init_from={t.init_from!r}")
    if t.compile:
        raise ValueError(f"{what} runs eagerly: set train.compile=false")
    if t.checkpoint_format == "full":
        raise ValueError(f"{what} writes sharded checkpoints: set train.checkpoint_format=sharded (or auto)")
    m = model_cfg
    if tp > 1:
        for name in ("n_heads", "n_kv_heads", "mlp_dim"):
            if getattr(m, name) % tp:
                raise ValueError(
                    f"train.tensor_parallel={tp} does not divide model.{name}={getattr(m, name)}: "
                    f"choose a tensor_parallel that divides {name}"
                )
        if t.seq_len % tp:
            raise ValueError(
                f"train.tensor_parallel={tp} does not divide train.seq_len={t.seq_len}: the streams are "
                "sequence-sharded; choose a seq_len that tp divides"
            )
    if pp > 1:
        if m.n_layers % pp:
            raise ValueError(
                f"train.pipeline_parallel={pp} does not divide model.n_layers={m.n_layers}: the stages take "
                "equal numbers of blocks"
            )
        if t.pipeline_schedule == "1f1b" and t.grad_accum < pp:
            raise ValueError(
                f"train.pipeline_schedule=1f1b needs train.grad_accum (the micro-batches, {t.grad_accum}) >= "
                f"train.pipeline_parallel={pp}: raise grad_accum or use gpipe"
            )
        if m.tie_embeddings:
            raise ValueError(
                f"train.pipeline_parallel={pp} with model.tie_embeddings=true: the embedding (first stage) and "
                "the head (last stage) cannot share one weight; set model.tie_embeddings=false"
            )


def check_layout(t, model_cfg, world: int) -> None:
    """:func:`check_settings`, then the fit to ``world`` processes."""
    check_settings(t, model_cfg)
    need = t.tensor_parallel * t.pipeline_parallel
    if need == 1:
        return
    what = " x ".join(
        f"train.{n}={v}"
        for n, v in (("tensor_parallel", t.tensor_parallel), ("pipeline_parallel", t.pipeline_parallel))
        if v > 1
    )
    if world == 1:
        raise ValueError(
            f"{what} needs {need} processes: launch with torchrun --nproc_per_node {need} (this is one process)"
        )
    if world % need:
        raise ValueError(f"{what} = {need} does not divide the world size {world}: use a multiple of {need} processes")
