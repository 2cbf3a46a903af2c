"""The training loop: ``train(cfg)`` runs (or resumes) one run and returns its directory.

The components come from their own modules: the run directory's policy (``rundir``), data and
model (``build``), the layout of the ranks (``layout``: data, tensor and pipeline degrees), data
parallelism and the state dicts it reads and writes (``parallel``: one process, DDP or FSDP2),
tensor and pipeline parallelism (``tensor_parallel``, ``pipeline``), checkpoints in either format
and the resume (``resume``, ``checkpoint``, ``sharded_checkpoint``), one step (``step``),
evaluation (``evaluation``), logging (``metrics``). This module owns the loop and its fault handling:

- nothing is written until the first optimiser step is done (``rundir.publish_new``), so a run
  that fails while preparing leaves no trace, and ``--overwrite`` keeps the old run until then;
- a resume starts from the newest *valid* checkpoint, naming each newer one it skipped and why;
  it refuses only when checkpoints exist and none is valid;
- a Ctrl-C during the forward/backward pass is raised at once (nothing is lost); from
  ``optimizer.step()`` to the end of the step's bookkeeping (counter, metrics row, eval,
  checkpoint) it is held by :class:`InterruptGuard` and raised after, so weights, counter and
  checkpoint always agree and no step is applied twice on resume; on Ctrl-C a checkpoint of
  the current step is saved and ``KeyboardInterrupt`` re-raised;
- a non-finite loss or gradient norm stops the run (``NonFiniteLossError``) before the update.

Evaluations: every ``eval_interval`` steps over ``eval_batches`` batches of windows spread over the
validation split; the final one (the last step, and the one ``DONE`` reports) over the whole split.
Every step's loss and gradient norm go to ``steps.csv``; ``DONE`` gets their stability summary
(``stability``). ``provenance.json`` is written when the run is published and extended on each resume.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import torch

from .._optional import require
from ..data import PreparedData
from ..fileio import check_writable, remove_temps
from . import distributed as D
from .build import build_model, compiled_forward, prepare_run_data
from .checkpoint import remove_stale
from .config import TrainConfig, load_config
from .evaluation import ValResult, bits_per_byte, evaluate_loss
from .interrupt import InterruptGuard
from .layout import make_layout
from .metrics import STEPS, MetricsLog, peak_memory_mb, read_metrics
from .optim import build_optimizer, lr_at
from .parallel import DataParallel
from .precision import resolve_precision
from .provenance import record_resume, record_start
from .resume import expected_shapes, resolve_format, restore, save
from .rundir import CONFIG, DONE, check_target, publish_new, resume_changes, write_config, write_done
from .stability import stability
from .step import apply_update, backward_step

__all__ = ["NonFiniteLossError", "Trainer", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stopped before applying the update."""


class Trainer:
    """One run. ``Trainer(cfg).fit()``; ``train()`` wraps it with process-group teardown."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> None:
        cfg.validate()
        self.cfg, self.resume, self.overwrite = cfg, resume, overwrite
        self.run_dir = cfg.run_dir
        check_target(self.run_dir, resume, overwrite)  # before anything is built or written
        if cfg.data.rank0_builds_cache:
            check_writable(cfg.data.cache_dir, "data.cache_dir")
        self.info = D.setup(cfg.train.device)
        try:
            self.layout = make_layout(cfg.train, self.info, cfg.model)  # before anything is built
            self._build()
        except BaseException:
            D.teardown(self.info)
            raise

    def _build(self) -> None:
        cfg, info, t = self.cfg, self.info, self.cfg.train
        if t.threads is not None:
            torch.set_num_threads(t.threads)
        self.changes = self._resume_changes() if self.resume else {}
        t.checkpoint_format = resolve_format(t.checkpoint_format, self.layout.sharded)  # kept in config.yaml
        self.data: PreparedData = prepare_run_data(cfg, info)  # fills cfg.model.vocab_size
        self.data_info = self.layout.data_info(info)  # the data-parallel coordinate: which batches
        self.parallel = DataParallel(info, t.fsdp)
        self.raw_model, self.model = build_model(cfg, self.parallel, self.layout)
        self.optimizer = build_optimizer(self.raw_model, t.lr, (t.beta1, t.beta2), t.weight_decay, t.eps)
        self.precision = resolve_precision(t.precision, info.device)
        self.step = 0
        self.elapsed_before = 0.0  # seconds the run had trained before this process (resume)
        self.last_checkpoint: Path | None = None
        self.skipped: list[tuple[Path, str]] = []
        if self.resume:
            self._restore()
        self.saved_step = self.step if self.last_checkpoint is not None else None
        self.forward_model = self.model
        self.eval_model = getattr(self.model, "eval_model", self.raw_model)  # a pipeline's: the stages in turn
        if t.compile:
            self.forward_model = compiled_forward(self.raw_model, self.model, self.parallel.sharded)
        self.batcher = self.data.train_batcher(
            t.seq_len, t.batch_size, t.seed, self.data_info.rank, self.data_info.world_size, micro_steps=t.grad_accum
        )
        self.tokens_per_step = t.batch_size * t.seq_len * t.grad_accum * self.layout.dp
        self.log: MetricsLog | None = None
        self._pending: list[tuple] = []  # metrics rows made before the run directory exists
        self.published = False
        if self.resume:
            self._publish()

    # --- resume -------------------------------------------------------------------------------
    def _resume_changes(self) -> dict[str, str]:
        """The allowed changes against the run's saved config, checked before the data is prepared
        (so another tokenizer is refused as a changed data.tokenizer, not by its vocabulary size);
        an unset model.vocab_size takes the saved one (the tokenizer's, filled in when the run started)."""
        saved = load_config(self.run_dir / CONFIG)
        if self.cfg.model.vocab_size is None:
            self.cfg.model.vocab_size = saved.model.vocab_size
        if self.cfg.train.checkpoint_format == "auto":  # the run keeps the format it started with
            self.cfg.train.checkpoint_format = saved.train.checkpoint_format
        return resume_changes(saved, self.cfg, self.run_dir)

    def _restore(self) -> None:
        restore(self, expected_shapes(self.cfg, self.raw_model))
        if self.last_checkpoint is not None:
            self.elapsed_before = _elapsed_until(self.run_dir, self.step)
            for key, effect in self.changes.items():
                _say(self.info.is_main, f"resume: {key} changed: {effect}")

    # --- the run directory --------------------------------------------------------------------
    def _publish(self) -> None:
        """Rank 0 starts writing: a new run replaces its directory (only now), a resumed one
        cleans the leftovers of a kill and records its (allowed) new config."""
        self.published = True
        if not self.info.is_main:
            return
        if self.resume:
            stale = remove_stale(self.run_dir) + remove_temps(self.run_dir)  # a kill's leftovers
            (self.run_dir / DONE).unlink(missing_ok=True)
            write_config(self.run_dir, self.cfg)
            record_resume(self.run_dir)
        else:
            stale = publish_new(self.run_dir, self.cfg)
            record_start(self.run_dir)
        for path in stale:
            _say(True, f"removed {path}: a temporary folder left by an interrupted write")
        resume_step = (self.step if self.last_checkpoint is not None else -1) if self.resume else None
        self.log = MetricsLog(self.run_dir, resume_step=resume_step)
        writers = {"row": self.log.log, "hres": self.log.log_hres, "step": self.log.log_step}
        for kind, *args in self._pending:
            writers[kind](*args)
        self._pending.clear()

    def _log_row(self, row: dict) -> None:
        if self.log is not None:
            self.log.log(row)
        elif self.info.is_main and not self.published:
            self._pending.append(("row", row))

    def _log_step(self, step: int, loss: float, grad_norm: float, lr: float) -> None:
        if self.log is not None:
            self.log.log_step(step, loss, grad_norm, lr)
        elif self.info.is_main and not self.published:
            self._pending.append(("step", step, loss, grad_norm, lr))

    def _log_hres(self, step: int, hres: dict) -> None:
        if self.log is not None:
            self.log.log_hres(step, hres)
        elif self.info.is_main and not self.published:
            self._pending.append(("hres", step, hres))

    # --- checkpoints --------------------------------------------------------------------------
    def save(self) -> None:
        save(self)  # every rank (a collective under FSDP, TP, PP and for sharded checkpoints)

    # --- the loop -----------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float]:
        """One optimiser step at ``self.step``, which it advances; returns (loss, grad_norm, lr)."""
        out = self._forward_backward()
        self._apply_update()
        return out

    def _forward_backward(self) -> tuple[float, float, float]:
        """Gradients of the step at ``self.step`` (clipped); NonFiniteLossError if not finite."""
        t, device = self.cfg.train, self.info.device
        lr = lr_at(self.step, t.lr, t.min_lr, t.warmup_steps, t.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro_batches = []
        for micro in range(t.grad_accum):
            x, y = self.batcher.batch(self.step, micro)
            micro_batches.append((x.to(device), y.to(device)))
        if hasattr(self.model, "forward_backward"):  # a pipeline runs its own schedule
            total, grad_norm = self.model.forward_backward(micro_batches, self.precision, t.grad_clip)
        else:
            total, grad_norm = backward_step(
                self.forward_model, micro_batches, precision=self.precision, grad_clip=t.grad_clip,
                parameters=self.raw_model.parameters(), grad_sync=self.model,
            )  # fmt: skip
        loss_value = D.all_reduce_sum(total, self.info).item() / self.info.world_size
        grad_value = float(grad_norm)
        if not (math.isfinite(loss_value) and math.isfinite(grad_value)):
            self.optimizer.zero_grad(set_to_none=True)
            where = self.last_checkpoint or "none was written yet"
            raise NonFiniteLossError(
                f"non-finite {'loss' if not math.isfinite(loss_value) else 'gradient norm'} at step {self.step} "
                f"(loss={loss_value}, grad_norm={grad_value}); the run stopped before applying it. "
                f"Last good checkpoint: {where}. Try a lower train.lr or fp32 precision."
            )
        return loss_value, grad_value, lr

    def _apply_update(self) -> None:
        apply_update(self.optimizer)
        self.step += 1

    def evaluate(self, final: bool = False) -> tuple[ValResult, float, dict]:
        """``(result, bits per byte, H_res summaries)``: ``eval_batches`` batches of windows spread
        over the validation split, or with ``final`` the whole split."""
        t = self.cfg.train
        hres: dict = {}
        # evaluation stays eager, as before compile: the blocks compiled in place would otherwise
        # compile again for no-grad and for the final evaluation's batch shapes
        stance = torch.compiler.set_stance("force_eager") if t.compile else contextlib.nullcontext()
        with stance:
            result = evaluate_loss(
                self.eval_model, self.data.val, t.seq_len, t.batch_size, None if final else t.eval_batches,
                self.info.device, self.precision, self.data_info, hres,
            )  # fmt: skip
        return result, bits_per_byte(result.loss, self.data.n_val_tokens, self.data.val_bytes), hres

    def _eval_and_log(self, elapsed: float, final: bool = False) -> tuple[ValResult, float]:
        result, bpb, hres = self.evaluate(final)
        self._log_row({
            "step": self.step, "tokens": self.step * self.tokens_per_step, "elapsed_s": elapsed,
            "val_loss": result.loss, "val_bpb": bpb, "val_tokens": result.tokens,
        })  # fmt: skip
        self._log_hres(self.step, hres)
        return result, bpb

    def _stability(self) -> dict:
        """The stability summary of every step recorded in ``steps.csv`` (rank 0)."""
        rows = [r for r in read_metrics(self.run_dir, STEPS) if r["loss"] is not None and r["grad_norm"] is not None]
        return stability(
            [r["step"] for r in rows], [r["loss"] for r in rows], [r["grad_norm"] for r in rows],
            self.cfg.train.warmup_steps,
        )  # fmt: skip

    def fit(self) -> Path:
        t, info = self.cfg.train, self.info
        tqdm = require("tqdm.auto", "hyperconn train").tqdm
        start_time = time.perf_counter() - self.elapsed_before  # elapsed_s continues across resumes
        # the bar on a terminal; elsewhere (nohup, SLURM, a pipe) one line per log interval instead
        show = info.is_main and t.progress
        bar_on = show and sys.stderr.isatty()
        bar = tqdm(total=t.steps, initial=self.step, disable=not bar_on,
                   desc=self.run_dir.name, unit="step", dynamic_ncols=True)  # fmt: skip
        window_time, window_steps = 0.0, 0
        say_compile = t.compile  # the first step in this process pays the one-off compile: say it once
        final = None  # (ValResult, bpb) of the whole-split evaluation at the last step
        with InterruptGuard() as guard:
            try:
                if self.step == 0:
                    self._eval_and_log(0.0)
                while self.step < t.steps:
                    tick = time.perf_counter()
                    loss, grad_norm, lr = self._forward_backward()  # a Ctrl-C here loses nothing
                    # from the update to the step's checkpoint, a Ctrl-C waits for the block's end:
                    # weights, counter, metrics row and checkpoint always agree
                    with guard.atomic():
                        self._apply_update()
                        if not self.published:
                            self._publish()  # the run has started: only now is anything written
                        window_time += time.perf_counter() - tick
                        window_steps += 1
                        if say_compile:
                            said = f"torch.compile: the first training step took {time.perf_counter() - tick:.1f} s"
                            bar.write(said) if bar_on else _say(info.is_main, said)
                            say_compile = False
                        tok_s = window_steps * self.tokens_per_step / max(window_time, 1e-9)
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}")
                        elapsed = time.perf_counter() - start_time
                        self._log_step(self.step, loss, grad_norm, lr)
                        if self.step % t.log_interval == 0 or self.step == t.steps:
                            self._log_row({
                                "step": self.step, "tokens": self.step * self.tokens_per_step, "loss": loss,
                                "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s,
                                "peak_mem_mb": peak_memory_mb(info.device), "elapsed_s": elapsed,
                            })  # fmt: skip
                            if show and not bar_on:
                                _progress_line(self.step, t.steps, loss, lr, tok_s, elapsed)
                            window_time, window_steps = 0.0, 0
                        if self.step % t.eval_interval == 0 or self.step == t.steps:
                            last = self.step == t.steps
                            result, bpb = self._eval_and_log(elapsed, final=last)
                            final = (result, bpb) if last else None
                            bar.write(f"step {self.step:6d}  val_loss {result.loss:.4f}") if info.is_main else None
                        if self.step % t.checkpoint_interval == 0 or self.step == t.steps:
                            self.save()
            except KeyboardInterrupt:
                bar.close()
                if not self.published:
                    _say(info.is_main, "\ninterrupted before the first step: nothing was written")
                    raise
                if self.saved_step != self.step:
                    self.save()
                _say(info.is_main, f"\ninterrupted at step {self.step}: checkpoint saved in "
                     f"{self.last_checkpoint}; continue with --resume")  # fmt: skip
                raise
            finally:
                bar.close()
                if self.log is not None:
                    self.log.close()
                    self.log = None
            if self.saved_step != self.step:
                self.save()
            if final is None:  # resumed a finished run: nothing trained, report the eval anyway
                final = self.evaluate(final=True)[:2]
            if info.is_main:
                result, bpb = final
                write_done(self.run_dir, self.step, result.loss, bpb, result.tokens, self._stability())
        return self.run_dir

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        D.teardown(self.info)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or with ``resume`` continue) the run ``cfg`` describes; return its directory."""
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _progress_line(step: int, steps: int, loss: float, lr: float, tok_s: float, elapsed: float) -> None:
    """The off-terminal progress report: one flushed line on stderr."""
    line = f"step {step}/{steps}  loss {loss:.4f}  lr {lr:.3g}  tok/s {tok_s:,.0f}  elapsed {elapsed:.1f}s"
    print(line, file=sys.stderr, flush=True)


def _elapsed_until(run_dir: Path, step: int) -> float:
    """The largest ``elapsed_s`` that ``metrics.csv`` recorded up to ``step`` (0 when none)."""
    try:
        rows = read_metrics(run_dir)
    except (OSError, ValueError):
        return 0.0
    return max((r["elapsed_s"] for r in rows if r["step"] <= step and r["elapsed_s"] is not None), default=0.0)


def _say(main: bool, message: str) -> None:
    if main:
        print(message, file=sys.stderr, flush=True)
