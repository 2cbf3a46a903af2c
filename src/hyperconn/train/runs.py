"""Finished (or interrupted) runs as a library: the model of a run, its evaluation.

These read a run directory written by any version of the trainer: ``config.yaml`` and the
newest ``checkpoints/step_<k>/model.safetensors`` (the trainer state is not needed), or a sharded
checkpoint's shards consolidated in this process."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import load_tokenizer, prepare_data
from ..model import LanguageModel
from . import distributed as D
from .build import build_from_hf
from .checkpoint import latest_checkpoint, load_weights, read_weights, step_of
from .config import TrainConfig, load_config
from .evaluation import bits_per_byte, evaluate_loss
from .rundir import CONFIG
from .sharded_checkpoint import consolidate, is_sharded, read_sharded


def check_run_dir(run_dir: Path) -> None:
    """FileNotFoundError unless ``run_dir`` is a run directory (a folder with a ``config.yaml``)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no such folder)")
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (it has no {CONFIG})")


def load_run(run_dir: str | Path, device: str | torch.device = "cpu"):
    """``(model, cfg, tokenizer)`` from a run's config and its newest checkpoint (model in eval mode).

    The newest checkpoint is used or refused (ValueError naming the file): evaluating an older
    one in its place would report numbers for a model the run did not end with."""
    model, cfg, tokenizer, _ = _load(Path(run_dir), device)
    return model, cfg, tokenizer


def _load(run_dir: Path, device) -> tuple[LanguageModel, TrainConfig, object, int]:
    check_run_dir(run_dir)
    cfg = load_config(run_dir / CONFIG)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint")
    tokenizer = load_tokenizer(cfg.data)
    if cfg.train.init_from is not None:
        model = build_from_hf(cfg, pretrained=False)  # the HF architecture; the weights come from the file
    else:
        with torch.device("meta"):
            model = LanguageModel(cfg.model)
        model.to_empty(device="cpu")
        model.reset_parameters()  # the rotary tables (buffers); the weights come from the file
    if is_sharded(ckpt):  # train.checkpoint_format=sharded: consolidated here, in one process
        read_sharded(ckpt)
        weights, step = consolidate(ckpt), step_of(ckpt)
    else:
        weights, step = read_weights(ckpt)
    load_weights(model, weights, ckpt)
    return model.to(device).eval(), cfg, tokenizer, step


def evaluate(
    run_dir: str | Path, max_batches: int | None = None, device: str = "auto", device_option: str = "device"
) -> dict:
    """``{"step", "val_loss", "val_bpb", "val_tokens"}`` of a run's newest checkpoint (nats/token,
    bits/byte, targets scored): the whole validation split, or with ``max_batches`` that many
    batches of windows spread over it (``hyperconn.train.evaluation``). ``device_option`` names the
    device argument in error messages."""
    device = D.pick_device(device, 0, option=device_option)
    check_run_dir(Path(run_dir))
    model, cfg, _, step = _load(Path(run_dir), device)
    data = prepare_data(cfg.data)
    t = cfg.train
    result = evaluate_loss(model, data.val, t.seq_len, t.batch_size, max_batches, device, t.precision)
    bpb = bits_per_byte(result.loss, data.n_val_tokens, data.val_bytes)
    return {"step": step, "val_loss": result.loss, "val_bpb": bpb, "val_tokens": result.tokens}
