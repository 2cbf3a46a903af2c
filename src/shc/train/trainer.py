"""The training loop: ``train(cfg)`` runs (or resumes) one run and returns its directory.

Run directory (written by rank 0 only)::

    config.yaml         the resolved TrainConfig (vocab size filled in)
    metrics.csv         step, tokens, loss, lr, grad_norm, tokens_per_s, peak_mem_mb, elapsed_s,
                        and eval rows with val_loss, val_bpb
    h_res.csv           per-connection H_res summaries at each eval
    tensorboard/        the same scalars as TensorBoard events
    checkpoints/step_<k>/model.safetensors + trainer.pt   (newest ``keep_checkpoints`` kept)
    DONE                written last (JSON: final step and validation loss); absent = unfinished

A non-finite loss stops the run (``NonFiniteLossError``) before the bad update is applied and
leaves the last good checkpoint; Ctrl-C saves a resumable checkpoint and re-raises.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import PreparedData, TokenBatcher, load_tokenizer, prepare_data, val_batches
from ..model import LanguageModel
from . import distributed as D
from .checkpoint import latest_checkpoint, load_weights, read_checkpoint, save_checkpoint
from .config import TrainConfig, load_config
from .hres import capture_hres
from .loss import lm_loss
from .metrics import MetricsLog, peak_memory_mb
from .optim import build_optimizer, lr_at
from .precision import autocast

DONE = "DONE"
CONFIG = "config.yaml"
# settings a resumed run may change (they do not alter the optimisation trajectory)
RESUMABLE_CHANGES = {
    "steps",
    "eval_interval",
    "eval_batches",
    "log_interval",
    "checkpoint_interval",
    "keep_checkpoints",
    "out_dir",
    "device",
    "progress",
    "compile",
    "threads",
}


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stopped before applying the update."""


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    tokens,
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    info: D.DistInfo | None = None,
    hres: dict | None = None,
) -> float:
    """Mean next-token loss over (up to ``max_batches`` of) the validation windows, all ranks.

    With ``hres`` (a dict), the first batch also records per-connection ``H_res`` summaries."""
    info = info or D.DistInfo(device=torch.device(device))
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens)
    batches = val_batches(tokens, seq_len, batch_size, max_batches, info.rank, info.world_size)
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)
        probe = capture_hres(model) if (hres is not None and i == 0) else nullcontext({})
        with probe as summaries, autocast(device, precision):
            loss = lm_loss(model, x, y)
        if hres is not None and i == 0:
            hres.update(summaries)
        total += torch.stack([loss.double() * y.numel(), torch.tensor(float(y.numel()), device=device)])
    model.train(was_training)
    total = D.all_reduce_sum(total, info)
    if total[1] == 0:
        raise ValueError("no validation batch: the validation split is too small for this seq_len and batch size")
    return (total[0] / total[1]).item()


class Trainer:
    """One run. ``Trainer(cfg).fit()``; ``train()`` wraps it with process-group teardown."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> None:
        cfg.validate()
        if resume and overwrite:
            raise ValueError("choose one of resume and overwrite, not both")
        self.cfg, self.resume = cfg, resume
        self.run_dir = cfg.run_dir
        self._check_run_dir(resume, overwrite)  # before anything is written
        self.info = D.setup(cfg.train.device)
        try:
            self._build(cfg, resume)
        except BaseException:
            D.teardown(self.info)
            raise

    def _build(self, cfg: TrainConfig, resume: bool) -> None:
        info, t = self.info, cfg.train
        if t.threads is not None:
            torch.set_num_threads(t.threads)

        # data: rank 0 builds the token cache, the others then read it
        if not info.is_main:
            D.barrier(info)
        self.data: PreparedData = prepare_data(cfg.data)
        if info.is_main:
            D.barrier(info)
        vocab = self.data.tokenizer.vocab_size
        if cfg.model.vocab_size is None:
            cfg.model.vocab_size = vocab
        elif cfg.model.vocab_size < vocab:
            raise ValueError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {vocab}")

        if (
            next(val_batches(self.data.val, t.seq_len, t.batch_size, t.eval_batches, info.rank, info.world_size), None)
            is None
        ):
            raise ValueError(
                f"evaluation would see no batch: train.eval_batches={t.eval_batches} over {info.world_size} "
                f"rank(s) with {self.data.n_val_tokens} validation tokens; raise train.eval_batches to at "
                "least the number of ranks or use more validation data"
            )
        ckpt = None
        if resume:
            self._check_same_run(load_config(self.run_dir / CONFIG))
            ckpt = latest_checkpoint(self.run_dir)
        torch.manual_seed(t.seed)
        self.raw_model = LanguageModel(cfg.model).to(info.device)
        state = None
        if ckpt is not None:
            weights, state = read_checkpoint(ckpt)
            load_weights(self.raw_model, weights, ckpt)
        self.model = D.wrap(self.raw_model, info, t.fsdp and info.distributed)
        self.optimizer = build_optimizer(self.raw_model, t.lr, (t.beta1, t.beta2), t.weight_decay)
        self.step = 0
        if state is not None:
            self._load_optimizer(state["optimizer"])
            self.step = int(state["step"])
        self.forward_model = torch.compile(self.model) if t.compile else self.model
        self.batcher = TokenBatcher(self.data.train, t.seq_len, t.batch_size, t.seed, info.rank, info.world_size)
        self.tokens_per_step = t.batch_size * t.seq_len * t.grad_accum * info.world_size
        self.last_checkpoint = ckpt  # path (rank 0 knows it)
        self.saved_step = self.step if ckpt is not None else None  # every rank knows it
        self.log = None
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / DONE).unlink(missing_ok=True)
            _write_atomic(self.run_dir / CONFIG, cfg.to_yaml())
            self.log = MetricsLog(self.run_dir, resume_step=self.step if resume else None)

    # --- setup helpers ------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool, overwrite: bool) -> None:
        run_dir = self.run_dir
        if resume:
            if not (run_dir / CONFIG).is_file():
                raise FileNotFoundError(f"nothing to resume: {run_dir / CONFIG} does not exist")
            return
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            if not overwrite:
                raise FileExistsError(
                    f"run directory {run_dir} already exists; pass --resume to continue it or --overwrite to replace it"
                )
            if int(os.environ.get("RANK", "0")) == 0:
                shutil.rmtree(run_dir) if run_dir.is_dir() else run_dir.unlink()

    def _check_same_run(self, saved: TrainConfig) -> None:
        a, b = saved.to_dict(), self.cfg.to_dict()
        for cfg in (a, b):
            for key in RESUMABLE_CHANGES:
                cfg["train"].pop(key, None)
        diffs = sorted(_diff(a, b))
        if diffs:
            raise ValueError(
                f"cannot resume {self.run_dir}: the config differs from its {CONFIG} in {', '.join(diffs)}"
            )

    def _load_optimizer(self, optimizer_state: dict) -> None:
        if self.info.distributed and self.cfg.train.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            opts = StateDictOptions(full_state_dict=True)
            set_optimizer_state_dict(self.raw_model, self.optimizer, optimizer_state, options=opts)
        else:
            try:
                self.optimizer.load_state_dict(optimizer_state)
            except (ValueError, KeyError) as err:
                raise ValueError(f"checkpoint optimizer state does not match the model: {err}") from err

    def _state_dicts(self) -> tuple[dict, dict]:
        if self.info.distributed and self.cfg.train.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return (
                get_model_state_dict(self.raw_model, options=opts),
                get_optimizer_state_dict(self.raw_model, self.optimizer, options=opts),
            )
        return self.raw_model.state_dict(), self.optimizer.state_dict()

    # --- the loop -----------------------------------------------------------------------------
    def save(self) -> None:
        model_state, optim_state = self._state_dicts()  # collective under FSDP: every rank
        self.saved_step = self.step
        if self.info.is_main:
            self.last_checkpoint = save_checkpoint(
                self.run_dir,
                self.step,
                model_state,
                optim_state,
                {"config": self.cfg.to_dict()},
                keep=self.cfg.train.keep_checkpoints,
            )
        D.barrier(self.info)

    def train_step(self) -> tuple[float, float, float]:
        """One optimiser step at ``self.step``; returns (loss, grad_norm, lr)."""
        t, device = self.cfg.train, self.info.device
        lr = lr_at(self.step, t.lr, t.min_lr, t.warmup_steps, t.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=device)
        for micro in range(t.grad_accum):
            x, y = self.batcher.batch(self.step, micro)
            x, y = x.to(device), y.to(device)
            last = micro == t.grad_accum - 1
            sync = nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                with autocast(device, t.precision):
                    loss = lm_loss(self.forward_model, x, y) / t.grad_accum
                loss.backward()
            total += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), t.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
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
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_value, lr

    def evaluate(self) -> tuple[float, float, dict]:
        t = self.cfg.train
        hres: dict = {}
        loss = validation_loss(
            self.raw_model,
            self.data.val,
            t.seq_len,
            t.batch_size,
            t.eval_batches,
            self.info.device,
            t.precision,
            self.info,
            hres,
        )
        return loss, self.data.bits_per_byte(loss), hres

    def _eval_and_log(self, elapsed: float) -> float:
        loss, bpb, hres = self.evaluate()
        if self.log is not None:
            self.log.log(
                {
                    "step": self.step,
                    "tokens": self.step * self.tokens_per_step,
                    "elapsed_s": elapsed,
                    "val_loss": loss,
                    "val_bpb": bpb,
                }
            )
            self.log.log_hres(self.step, hres)
        return loss

    def fit(self) -> Path:
        t, info = self.cfg.train, self.info
        start_time = time.perf_counter()
        bar = tqdm(
            total=t.steps,
            initial=self.step,
            disable=not (info.is_main and t.progress),
            desc=self.run_dir.name,
            unit="step",
            dynamic_ncols=True,
        )
        window_time, window_steps = 0.0, 0
        val_loss = None
        try:
            if self.step == 0 and not self.resume:
                val_loss = self._eval_and_log(0.0)
            while self.step < t.steps:
                tick = time.perf_counter()
                loss, grad_norm, lr = self.train_step()
                self.step += 1
                window_time += time.perf_counter() - tick
                window_steps += 1
                tok_s = window_steps * self.tokens_per_step / max(window_time, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}")
                elapsed = time.perf_counter() - start_time
                if self.step % t.log_interval == 0 or self.step == t.steps:
                    if self.log is not None:
                        self.log.log(
                            {
                                "step": self.step,
                                "tokens": self.step * self.tokens_per_step,
                                "loss": loss,
                                "lr": lr,
                                "grad_norm": grad_norm,
                                "tokens_per_s": tok_s,
                                "peak_mem_mb": peak_memory_mb(info.device),
                                "elapsed_s": elapsed,
                            }
                        )
                    window_time, window_steps = 0.0, 0
                if self.step % t.eval_interval == 0 or self.step == t.steps:
                    val_loss = self._eval_and_log(elapsed)
                    bar.write(f"step {self.step:6d}  val_loss {val_loss:.4f}") if info.is_main else None
                if self.step % t.checkpoint_interval == 0 or self.step == t.steps:
                    self.save()
        except KeyboardInterrupt:
            bar.close()
            if self.saved_step != self.step:
                self.save()
            if info.is_main:
                print(
                    f"\ninterrupted at step {self.step}: checkpoint saved in {self.last_checkpoint}; "
                    f"continue with --resume"
                )
            raise
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
                self.log = None
        if self.saved_step != self.step:
            self.save()
        if val_loss is None:  # resumed a finished run: nothing trained, report the eval anyway
            val_loss = self.evaluate()[0]
        if info.is_main:
            done = {"step": self.step, "val_loss": val_loss, "val_bpb": self.data.bits_per_byte(val_loss)}
            _write_atomic(self.run_dir / DONE, json.dumps(done) + "\n")
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


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def load_run(run_dir: str | Path, device: str | torch.device = "cpu"):
    """``(model, cfg, tokenizer)`` from a run's config and its latest checkpoint (model in eval mode)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / CONFIG)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint")
    tokenizer = load_tokenizer(cfg.data)
    model = LanguageModel(cfg.model)
    weights, _ = read_checkpoint(ckpt)
    load_weights(model, weights, ckpt)
    return model.to(device).eval(), cfg, tokenizer


def evaluate(run_dir: str | Path, max_batches: int | None = None, device: str = "auto") -> dict:
    """Validation loss (nats/token) and bits per byte of a run's latest checkpoint."""
    device = D.pick_device(device, 0)
    model, cfg, _ = load_run(run_dir, device)
    data = prepare_data(cfg.data)
    t = cfg.train
    loss = validation_loss(model, data.val, t.seq_len, t.batch_size, max_batches, device, t.precision)
    step = _step_of(latest_checkpoint(Path(run_dir)))
    return {"step": step, "val_loss": loss, "val_bpb": data.bits_per_byte(loss)}


# --- helpers ------------------------------------------------------------------------------------


def _step_of(ckpt: Path) -> int:
    return int(Path(ckpt).name.split("_")[-1])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")] if a != b else []
