"""The run directory's policy: what may be started, resumed or replaced, and what a resume may change.

Layout (written by rank 0 only; the trainer is the single writer of its run directory)::

    config.yaml         the resolved TrainConfig (vocab size filled in)
    provenance.json     the code, packages and machine that started the run, and of each resume
                        (``hyperconn.train.provenance``)
    metrics.csv         step rows and eval rows (``hyperconn.train.metrics``)
    steps.csv           training loss, gradient norm and learning rate of every optimiser step
    h_res.csv           per-connection H_res summaries at each eval
    tensorboard/        the same scalars as TensorBoard events
    checkpoints/step_<k>/model.safetensors + trainer.pt   (``hyperconn.train.checkpoint``)
    DONE                written last; absent = unfinished (:func:`write_done`)

``DONE`` is JSON: ``step`` (int), ``val_loss`` (nats per target) and ``val_bpb`` (bits per byte) of
the final evaluation, which scores every target of the validation split once, ``val_tokens`` (int,
the targets it scored: the split's token count minus one) and ``stability`` (the dict of
:func:`hyperconn.train.stability.stability` over ``steps.csv``).

Guarantees:

- nothing is written before the run has *started*: data prepared, model built, the step-0
  evaluation and the first optimiser step done (:func:`publish_new`). A run that fails earlier
  leaves no directory behind, and with ``--overwrite`` leaves the old one byte-identical;
- ``--overwrite`` moves the old directory aside with one atomic rename and deletes it only then;
- a resume may change only the keys of :data:`RESUMABLE_CHANGES`, each with the effect written
  next to it; any other difference is refused, naming the keys.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..fileio import TEMP_MARK, NotWritableError, atomic_write_text, check_writable, remove_temps, temp_name
from .config import TrainConfig

CONFIG = "config.yaml"
DONE = "DONE"

# train.<key> a resumed run may change, and what the change does to the run (shown on resume)
RESUMABLE_CHANGES: dict[str, str] = {
    "steps": "moves the end of the cosine schedule: every step from the checkpoint on gets the learning rate "
    "of the new schedule, so an extended run differs from a run started with the new steps (equal only "
    "for the warm-up steps both share); below the checkpoint's step it is refused",
    "eval_interval": "changes when validation runs; evaluation reads the weights only (training unchanged)",
    "eval_batches": "changes how many validation windows a periodic eval averages: its val_loss values change, "
    "training and the final (whole-split) evaluation do not",
    "log_interval": "changes which steps get a metrics row (training unchanged)",
    "checkpoint_interval": "changes where checkpoints are written (training unchanged)",
    "keep_checkpoints": "changes how many checkpoints are kept (training unchanged)",
    "out_dir": "the run directory itself (the run is found through it)",
    "progress": "the progress bar only",
    "device": "continues on another device: refused when it changes the resolved precision (auto = bf16 on "
    "CUDA, fp32 on CPU); otherwise results agree to rounding, not bit for bit",
    "compile": "torch.compile on or off: the same math in other kernels; losses agree to rounding, not bit for bit",
    "fsdp": "FSDP2 on or off: the same math, sharded or not (resume across layouts: docs/distributed.md)",
    "tensor_parallel": "another tensor-parallel degree: the same math; a changed data-parallel degree changes the "
    "global batch from the checkpoint on (said when it resumes)",
    "pipeline_parallel": "another pipeline degree: the same math; a changed data-parallel degree changes the "
    "global batch from the checkpoint on (said when it resumes)",
    "pipeline_schedule": "another pipeline schedule (gpipe, 1f1b): the same math in another order of micro-batches",
    "threads": "CPU threads: the same math; float reductions may round differently (not bit for bit)",
}


def check_target(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a start that would clobber or find nothing, before anything is built or written."""
    if resume and overwrite:
        raise ValueError("choose one of resume and overwrite, not both")
    if resume:
        if not (run_dir / CONFIG).is_file():
            raise FileNotFoundError(f"nothing to resume: {run_dir / CONFIG} does not exist")
        try:
            check_writable(run_dir, "run directory")
        except NotWritableError as err:
            raise NotWritableError(f"cannot resume: {err}") from None
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not overwrite:
        raise FileExistsError(
            f"run directory {run_dir} already exists; pass --resume to continue it or --overwrite to replace it"
        )
    # a new run is created beside run_dir (publish_new renames into place): its parent must be writable
    check_writable(run_dir.parent if run_dir.exists() else run_dir, "run directory (train.out_dir)")


def publish_new(run_dir: Path, cfg: TrainConfig) -> list[Path]:
    """Create the directory of a run that has started (replacing an old one) and write its config.

    The old directory, if any, is renamed aside atomically and then deleted, so a kill leaves
    either the old run or the new one under ``run_dir`` (plus a hidden temporary sibling that
    the next :func:`publish_new` removes). Returns the stale temporaries it deleted."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    stale = remove_temps(run_dir.parent, prefix=f".{run_dir.name}{TEMP_MARK}")  # this run's only
    if run_dir.exists() or run_dir.is_symlink():
        old = temp_name(run_dir)
        run_dir.rename(old)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    run_dir.mkdir()
    write_config(run_dir, cfg)
    return stale


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write_text(Path(run_dir) / CONFIG, cfg.to_yaml())


def resume_changes(saved: TrainConfig, now: TrainConfig, run_dir: Path) -> dict[str, str]:
    """``{train.<key>: effect}`` for each allowed change; ValueError naming any other difference."""
    a, b = saved.to_dict(), now.to_dict()
    changed = {}
    for key in RESUMABLE_CHANGES:
        if a["train"].pop(key, None) != b["train"].pop(key, None):
            changed[f"train.{key}"] = RESUMABLE_CHANGES[key]
    diffs = sorted(_diff(a, b))
    if diffs:
        raise ValueError(
            f"cannot resume {run_dir}: the config differs from its {CONFIG} in {', '.join(diffs)}; "
            f"a resume may change only train.{', train.'.join(RESUMABLE_CHANGES)}"
        )
    return changed


def write_done(
    run_dir: Path, step: int, val_loss: float, val_bpb: float, val_tokens: int, stability: dict | None = None
) -> None:
    """Mark the run finished (atomically), with its final evaluation and stability record."""
    done = {"step": step, "val_loss": val_loss, "val_bpb": val_bpb, "val_tokens": val_tokens, "stability": stability}
    atomic_write_text(Path(run_dir) / DONE, json.dumps(done) + "\n")


def read_done(run_dir: str | Path) -> dict | None:
    """A finished run's ``DONE`` (older runs lack ``val_tokens`` and ``stability``); None if unfinished."""
    path = Path(run_dir) / DONE
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")] if a != b else []
