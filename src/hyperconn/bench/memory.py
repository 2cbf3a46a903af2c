"""``hyperconn bench memory``: the residual stream's activation memory, residual vs n-widening vs
frac-connections (no timing).

For each contender the model of a preset is built (``hyperconn.model``) and one forward runs on a
fixed random batch, float32, with autograd on:

- ``stream_mib``: the bytes of the residual stream ``x`` as it enters one sublayer (the tensor the
  model keeps between sublayers: ``(B, T, C)`` for residual, ``(B, T, n, C)`` widened,
  ``(B, T, m, C/m)`` in fractions), read by a forward-pre-hook on the first block's MLP connection;
- ``saved_mib``: the bytes autograd saves for backward over the whole forward
  (:func:`hyperconn.bench.timing.saved_activation_bytes`: ``saved_tensors_hooks``, each storage
  once, the parameters included, the same for every contender but the connections' own);
- ``extra_saved_mib``: ``saved_mib`` minus residual's, and ``x_residual`` their ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..model import ConnectionConfig, LanguageModel
from .model import preset_model
from .timing import saved_activation_bytes


@dataclass
class MemoryBenchConfig:
    presets: tuple[str, ...] = ("small",)
    kinds: tuple[str, ...] = ("hc", "mhc", "shc")
    num_streams: int = 4
    num_fracs: int = 4
    batch_size: int = 4
    seq_len: int | None = None  # None: the preset's max_seq_len
    vocab_size: int = 2048
    seed: int = 0
    shrink: tuple[int, int] | None = None  # smoke tests: (dim, layers)

    def validate(self) -> MemoryBenchConfig:
        for name in ("num_streams", "num_fracs", "batch_size", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


def contenders(cfg: MemoryBenchConfig) -> list[tuple[str, ConnectionConfig]]:
    """Residual first, then each kind widened (``n = num_streams``) and in fractions (``m = num_fracs``)."""
    out = [("residual", ConnectionConfig(kind="residual"))]
    for kind in cfg.kinds:
        if kind == "residual":
            continue
        out.append((f"{kind} n={cfg.num_streams}", ConnectionConfig(kind=kind, num_streams=cfg.num_streams)))
        out.append((f"{kind} num_fracs={cfg.num_fracs}", ConnectionConfig(kind=kind, num_fracs=cfg.num_fracs)))
    return out


def build_model(cfg: MemoryBenchConfig, preset: str, connection: ConnectionConfig) -> LanguageModel:
    return preset_model(preset, cfg.vocab_size, cfg.shrink, connection, cfg.seed)


def measure(model: LanguageModel, idx: torch.Tensor) -> tuple[int, int]:
    """``(stream bytes entering one sublayer, bytes saved for backward by one forward)``."""
    seen: list[int] = []

    def hook(_module, args):
        seen.append(args[0].numel() * args[0].element_size())

    handle = model.blocks[0].mlp_conn.register_forward_pre_hook(hook)
    try:
        saved = saved_activation_bytes(lambda: model(idx))
    finally:
        handle.remove()
    return seen[0], saved


def run_memory_bench(cfg: MemoryBenchConfig, log=print) -> list[dict]:
    cfg.validate()
    rows = []
    for preset in cfg.presets:
        base = None
        for name, connection in contenders(cfg):
            model = build_model(cfg, preset, connection)
            seq = cfg.seq_len or model.cfg.max_seq_len
            gen = torch.Generator().manual_seed(cfg.seed)
            idx = torch.randint(cfg.vocab_size, (cfg.batch_size, seq), generator=gen)
            stream, saved = measure(model, idx)
            base = saved if base is None else base
            log(f"{preset} {name}: stream {stream / 2**20:.2f} MiB, saved {saved / 2**20:.1f} MiB")
            rows.append(dict(
                preset=preset, contender=name, batch=cfg.batch_size, seq_len=seq,
                stream_mib=stream / 2**20, saved_mib=saved / 2**20,
                extra_saved_mib=(saved - base) / 2**20, x_residual=saved / base,
            ))
            del model
    return rows


def config_dict(cfg: MemoryBenchConfig) -> dict:
    return asdict(cfg)
