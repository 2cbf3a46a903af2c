"""Named model shapes, each with default training settings.

A preset is data only: a :class:`ModelConfig` plus a plain mapping of training defaults whose
keys are the trainer's ``train.*`` settings. The trainer reads presets; nothing here imports it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .config import ModelConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig
    training: dict = field(default_factory=dict)


_PRESETS: dict[str, Preset] = {}


def _add(preset: Preset) -> None:
    _PRESETS[preset.name] = preset


# demo and cpu-study share one model: the demo is one run of the study's configuration
_CPU_MODEL = ModelConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, mlp_dim=384, max_seq_len=128)

_add(
    Preset(
        "demo",
        "4 layers, d 128: a few minutes of training on 2 CPU cores",
        _CPU_MODEL,
        dict(
            seq_len=128,
            batch_size=8,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=20,
            steps=300,
            eval_interval=25,
            eval_batches=8,
            log_interval=10,
            checkpoint_interval=100,
        ),
    )
)
_add(
    Preset(
        "cpu-study",
        "4 layers, d 128: one run of the CPU comparison study (about 2-3 minutes on 2 cores)",
        _CPU_MODEL,
        dict(
            seq_len=128,
            batch_size=8,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=30,
            steps=300,
            eval_interval=50,
            eval_batches=16,
            log_interval=10,
            checkpoint_interval=300,
        ),
    )
)
_add(
    Preset(
        "tiny",
        "6 layers, d 256",
        ModelConfig(dim=256, n_layers=6, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=768, max_seq_len=256),
        dict(
            seq_len=256,
            batch_size=16,
            lr=1.5e-3,
            min_lr=1.5e-4,
            warmup_steps=100,
            steps=2000,
            eval_interval=200,
            eval_batches=16,
            log_interval=10,
            checkpoint_interval=500,
        ),
    )
)
_add(
    Preset(
        "small",
        "12 layers, d 512",
        ModelConfig(dim=512, n_layers=12, n_heads=8, n_kv_heads=4, head_dim=64, mlp_dim=1536, max_seq_len=512),
        dict(
            seq_len=512,
            batch_size=16,
            lr=1e-3,
            min_lr=1e-4,
            warmup_steps=300,
            steps=10000,
            eval_interval=500,
            eval_batches=32,
            log_interval=20,
            checkpoint_interval=1000,
        ),
    )
)
_add(
    Preset(
        "qwen3-0.6b",
        "the paper's shape (Qwen3-0.6B: 28 layers, hidden 1024, GQA 16/8, tied embeddings)",
        ModelConfig(
            vocab_size=151936,
            dim=1024,
            n_layers=28,
            n_heads=16,
            n_kv_heads=8,
            head_dim=128,
            mlp_dim=3072,
            max_seq_len=2048,
            rope_base=1e6,
            tie_embeddings=True,
        ),
        # paper: global batch 512 x 2048, lr 6e-4 -> 6e-5 cosine after 1000 warm-up steps, ~15B tokens
        dict(
            seq_len=2048,
            batch_size=16,
            grad_accum=32,
            lr=6e-4,
            min_lr=6e-5,
            warmup_steps=1000,
            steps=14300,
            eval_interval=500,
            eval_batches=32,
            log_interval=10,
            checkpoint_interval=500,
        ),
    )
)


def available_presets() -> tuple[str, ...]:
    return tuple(_PRESETS)


def get_preset(name: str) -> Preset:
    """A deep copy of preset ``name`` (callers may edit it freely)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}")
    return copy.deepcopy(_PRESETS[name])
