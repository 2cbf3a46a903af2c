"""The trainer's checkpoints in either format: :func:`save` (every rank calls it) and
:func:`restore` (the newest valid checkpoint, under any layout).

``train.checkpoint_format`` (resolved once, when a run starts, and kept in its ``config.yaml``):

- ``full``: the whole state gathered onto rank 0's CPU, one ``model.safetensors`` + ``trainer.pt``
  (:mod:`hyperconn.train.checkpoint`); the default for one process and DDP;
- ``sharded``: every rank writes its own shards (:mod:`hyperconn.train.sharded_checkpoint`); the
  default under FSDP2, tensor and pipeline parallelism;
- ``auto``: the default of the layout, as above.

A resume reads the format each checkpoint was written in: a sharded run resumes under any layout
(FSDP2 on 2 ranks -> 1 process, TP 2 -> DDP 2, PP 2 -> 1 process, ...), a change of the
data-parallel degree changing the global batch from the checkpoint on (said in the log); a full
checkpoint resumes on the number of ranks that wrote it (refused otherwise, as before).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import distributed as D
from .checkpoint import check_weights, list_checkpoints, read_checkpoint, save_checkpoint, set_rng_state
from .sharded_checkpoint import is_sharded, load_sharded, read_sharded, save_sharded

FORMATS = ("auto", "full", "sharded")


def resolve_format(requested: str, sharded_layout: bool) -> str:
    """``full`` or ``sharded`` for ``train.checkpoint_format`` under a layout that shards the
    model (FSDP2, TP, PP) or not."""
    if requested == "auto":
        return "sharded" if sharded_layout else "full"
    return requested


def save(trainer) -> None:
    """Checkpoint ``trainer`` at its step (a collective: every rank calls it)."""
    t, info = trainer.cfg.train, trainer.info
    meta = {"precision": trainer.precision, "world_size": info.world_size, "layout": trainer.layout.describe()}
    if t.checkpoint_format == "sharded":
        trainer.last_checkpoint = save_sharded(
            trainer.run_dir, trainer.step, trainer.raw_model, trainer.optimizer, meta, keep=t.keep_checkpoints
        )
    else:
        model_state = trainer.parallel.model_state(trainer.raw_model)  # collectives under FSDP: every rank
        optim_state = trainer.parallel.optimizer_state(trainer.raw_model, trainer.optimizer)
        if info.is_main:
            trainer.last_checkpoint = save_checkpoint(
                trainer.run_dir, trainer.step, model_state, optim_state, meta, keep=t.keep_checkpoints
            )
    D.barrier(info)
    trainer.saved_step = trainer.step  # only once it is on disk


def restore(trainer, expected: dict[str, tuple]) -> None:
    """Load the newest valid checkpoint of ``trainer.run_dir`` into the trainer (weights, optimizer,
    RNG, step), naming each newer one it skipped and why; ``expected``: the whole model's
    ``{name: shape}`` (a sharded checkpoint must hold exactly these)."""
    main = trainer.info.is_main
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(trainer.run_dir)):
        try:
            if is_sharded(path):
                state = read_sharded(path, expected)
                check_compatible(trainer, path, state)
                load_sharded(path, trainer.raw_model, trainer.optimizer)
            else:
                weights, state = read_checkpoint(path)
                check_weights(trainer.raw_model, weights)
                trainer.parallel.check_optimizer_state(trainer.raw_model, trainer.optimizer, state["optimizer"])
                check_compatible(trainer, path, state)
                trainer.parallel.load_model_state(trainer.raw_model, weights, path)
                trainer.parallel.load_optimizer_state(trainer.raw_model, trainer.optimizer, state["optimizer"])
        except ValueError as err:
            if isinstance(err, _Refused):
                raise ValueError(str(err)) from None
            skipped.append((path, str(err)))
            _say(main, f"resume: skipped checkpoint {path.name}: {err}")
            continue
        set_rng_state(state["rng"])
        trainer.step = int(state["step"])
        trainer.last_checkpoint = path
        trainer.skipped = skipped
        fmt = "sharded" if is_sharded(path) else "full"
        _say(main, f"resume: from checkpoint {path} (step {trainer.step}, {fmt} format)")
        saved_layout = state.get("layout") or {"world_size": state.get("world_size")}
        now = trainer.layout.describe()
        if saved_layout != now:
            _say(
                main,
                f"resume: the layout changed from {_show(saved_layout)} to {_show(now)}" + _batch_note(state, trainer),
            )
        return
    trainer.skipped = skipped
    if skipped:
        raise ValueError(
            f"cannot resume {trainer.run_dir}: none of its {len(skipped)} checkpoint(s) is valid "
            f"(reasons above; newest: {skipped[0][1]})"
        )
    _say(main, f"resume: {trainer.run_dir} has no checkpoint yet; starting from step 0")


class _Refused(ValueError):
    """A setting that every checkpoint shares: refused, not skipped."""


def check_compatible(trainer, ckpt: Path, state: dict) -> None:
    """Settings that would change the trajectory beyond the layout: refused, not skipped."""
    t = trainer.cfg.train
    saved_precision = state.get("precision")
    if saved_precision != trainer.precision:
        raise _Refused(
            f"cannot resume {trainer.run_dir}: {ckpt.name} was trained in {saved_precision}, "
            f"train.precision={t.precision!r} on {trainer.info.device} resolves to {trainer.precision}; "
            "resume on a device where it resolves the same"
        )
    if state.get("checkpoint_format") != "sharded" and state.get("world_size") != trainer.info.world_size:
        raise _Refused(
            f"cannot resume {trainer.run_dir}: {ckpt.name} is a full checkpoint written by {state.get('world_size')} "
            f"rank(s), this is {trainer.info.world_size}: a full checkpoint resumes on its own number of ranks "
            "(a run started with train.checkpoint_format=sharded resumes on any layout)"
        )
    if int(state["step"]) > t.steps:
        raise _Refused(
            f"cannot resume {trainer.run_dir}: train.steps={t.steps} is below its checkpoint's step "
            f"{state['step']} ({ckpt.name})"
        )


def _batch_note(state: dict, trainer) -> str:
    saved = state.get("layout") or {}
    dp_then = saved.get("dp", state.get("world_size"))
    dp_now = trainer.layout.dp
    if dp_then == dp_now:
        return " (the same data-parallel degree: the same batches)"
    return (
        f"; the data-parallel degree changes {dp_then} -> {dp_now}, so from step {trainer.step} on the global batch "
        f"is {dp_now} x train.batch_size x train.grad_accum sequences and each rank reads another share"
    )


def _show(layout: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in layout.items())


def expected_shapes(cfg, raw_model: torch.nn.Module) -> dict[str, tuple]:
    """``{name: global shape}`` of the whole model (a pipeline stage holds only part of it)."""
    from ..model import LanguageModel

    if cfg.train.init_from is not None:
        return {k: tuple(v.shape) for k, v in raw_model.state_dict().items()}
    with torch.device("meta"):
        whole = LanguageModel(cfg.model)
    return {k: tuple(v.shape) for k, v in whole.state_dict().items()}


def _say(main: bool, message: str) -> None:
    if main:
        print(message, file=sys.stderr, flush=True)
