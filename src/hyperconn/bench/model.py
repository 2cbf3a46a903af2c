"""End-to-end benchmarks of the language model: training-step time and decode tokens/s.

Both build the model through its public API (``hyperconn.model``: a preset's ``ModelConfig`` with a
``ConnectionConfig``) and compare every connection kind with the residual baseline, interleaved
in the same process.

- Training step: :func:`hyperconn.train.step.train_step` itself (the trainer's step: autocast
  forward, bf16 by default, ``lm_loss``, backward, gradient clipping at 1.0, an AdamW step) on
  one fixed random micro-batch.
- Decode: ``model.generate`` with the KV cache, batch 1, greedy, from a short random prompt;
  tokens/s = new tokens / wall time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..connections import available_connections, frozen_parameters
from ..model import ConnectionConfig, LanguageModel, get_preset
from ..train.optim import build_optimizer
from ..train.step import train_step
from .call import count_aten_ops
from .floor import measure_copy_bandwidth, measure_gemm_rate, model_step_cost, projection_shape
from .timing import interleaved_medians

PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}


@dataclass
class ModelBenchConfig:
    presets: tuple[str, ...] = ("tiny", "small")
    kinds: tuple[str, ...] = available_connections()
    num_streams: int = 4
    batch_size: int = 4
    seq_len: int | None = None  # None: the preset's max_seq_len
    vocab_size: int = 2048
    precision: str = "bf16"
    stream_dtype: str = "float32"  # model.stream_dtype of every contender but residual
    compiled: bool = False
    repeats: int = 5
    warmup: int = 1
    # decode
    new_tokens: int = 64
    prompt_len: int = 16
    seed: int = 0
    # smoke tests shrink the preset: (dim, layers) override
    shrink: tuple[int, int] | None = None

    def validate(self) -> ModelBenchConfig:
        unknown = sorted(set(self.kinds) - set(available_connections()))
        if unknown:
            raise ValueError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(available_connections())}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("num_streams", "batch_size", "vocab_size", "repeats", "new_tokens", "prompt_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


def preset_model(preset: str, vocab_size: int, shrink: tuple[int, int] | None, connection: ConnectionConfig,
                 seed: int, stream_dtype: str = "float32") -> LanguageModel:
    """The ``preset``'s model with ``connection`` (``shrink``: ``(dim, layers)`` for smoke runs),
    its parameters drawn after ``torch.manual_seed(seed)``."""
    model_cfg = copy.deepcopy(get_preset(preset).model)
    model_cfg.vocab_size = vocab_size
    if shrink is not None:
        dim, layers = shrink
        model_cfg.dim, model_cfg.n_layers, model_cfg.mlp_dim = dim, layers, 3 * dim
        model_cfg.n_heads, model_cfg.n_kv_heads = max(1, dim // model_cfg.head_dim), 1
    model_cfg.connection = connection
    model_cfg.stream_dtype = stream_dtype
    torch.manual_seed(seed)
    return LanguageModel(model_cfg)


def build_model(cfg: ModelBenchConfig, preset: str, kind: str) -> LanguageModel:
    connection = ConnectionConfig(kind=kind, num_streams=1 if kind == "residual" else cfg.num_streams)
    dtype = "float32" if kind == "residual" else cfg.stream_dtype
    return preset_model(preset, cfg.vocab_size, cfg.shrink, connection, cfg.seed, dtype)


def _seq_len(cfg: ModelBenchConfig, model: LanguageModel) -> int:
    return cfg.seq_len or model.cfg.max_seq_len


def _autocast(precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)


def train_step_contender(cfg: ModelBenchConfig, preset: str, kind: str) -> Callable[[], None]:
    model = build_model(cfg, preset, kind)
    return training_step(cfg, model, torch.compile(model) if cfg.compiled else model)


def training_step(cfg: ModelBenchConfig, model: LanguageModel, forward: Callable) -> Callable[[], None]:
    """One trainer step (``hyperconn.train.step.train_step``) of ``model`` called through
    ``forward`` (the model, or a compiled form of it) on a fixed batch, as a closure."""
    optimizer = build_optimizer(model, 1e-4, (0.9, 0.95), 0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    seq = _seq_len(cfg, model)
    x = torch.randint(cfg.vocab_size, (cfg.batch_size, seq), generator=gen)
    y = torch.randint(cfg.vocab_size, (cfg.batch_size, seq), generator=gen)

    params = list(model.parameters())

    def step() -> None:
        train_step(forward, optimizer, [(x, y)], precision=cfg.precision, grad_clip=1.0, parameters=params)

    return step


def decode_contender(cfg: ModelBenchConfig, preset: str, kind: str) -> Callable[[], None]:
    model = build_model(cfg, preset, kind).eval()
    if cfg.compiled:
        # in place, so generate's own calls run compiled; dynamic: one graph for the prompt's
        # prefill and every one-token step at a growing cache position
        model.compile(dynamic=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    prompt = torch.randint(cfg.vocab_size, (1, cfg.prompt_len), generator=gen)

    def run() -> None:
        with _autocast(cfg.precision):
            model.generate(prompt, cfg.new_tokens, temperature=0.0)

    return run


def decode_ops_per_token(cfg: ModelBenchConfig, preset: str, kind: str) -> int:
    """ATen ops one cached decode step dispatches (batch 1, after the prompt's prefill): the
    number that batch-1 generation time follows on a CPU, free of timing noise. Under
    ``torch.inference_mode``, as ``generate`` runs."""
    model = build_model(cfg, preset, kind).eval()
    prompt = torch.randint(cfg.vocab_size, (1, cfg.prompt_len), generator=torch.Generator().manual_seed(cfg.seed))
    with torch.inference_mode(), _autocast(cfg.precision), frozen_parameters(model):
        cache = model.new_cache(1)
        model(prompt, 0, cache)
        token = prompt[:, -1:]
        return sum(count_aten_ops(lambda: model(token, cfg.prompt_len, cache)).values())


def _kind_label(kind: str, cfg: ModelBenchConfig) -> str:
    return "residual" if kind == "residual" else f"{kind} n={cfg.num_streams}"


def _contenders(cfg: ModelBenchConfig, preset: str, make: Callable) -> dict:
    """The residual baseline first, then every other requested kind, built by ``make``."""
    kinds = [k for k in cfg.kinds if k != "residual"]
    contenders = {"residual": make(cfg, preset, "residual")}
    contenders.update({_kind_label(k, cfg): make(cfg, preset, k) for k in kinds})
    return contenders


def step_floor_columns(cfg: ModelBenchConfig, preset: str, kind: str, copy_bytes_per_s: float) -> dict:
    """The connections' extra FLOPs and bytes per step over residual (:mod:`hyperconn.bench.floor`),
    the floor time they imply at the measured copy bandwidth and the GEMM rate of this kind's
    projection shape, and the connections built without ``H_res`` with what they save."""
    model = build_model(cfg, preset, kind)
    tokens = cfg.batch_size * _seq_len(cfg, model)
    conns = model.connections()
    gemm = measure_gemm_rate(projection_shape(conns[0], tokens)) if kind != "residual" else float("inf")
    elem_bytes = torch.finfo(model.stream_dtype or torch.float32).bits // 8
    cost = model_step_cost(model, tokens, elem_bytes, copy_bytes_per_s, gemm)
    return dict(
        extra_gflop=cost.extra.flops / 1e9, extra_mib=cost.extra.bytes / 2**20, floor_ms=cost.floor_s * 1e3,
        gemm_gflop_s=gemm / 1e9 if kind != "residual" else None, skipped=cost.skipped,
        saved_gflop=cost.saved.flops / 1e9, saved_mib=cost.saved.bytes / 2**20,
    )


def run_step_bench(cfg: ModelBenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Training-step time per preset, every kind interleaved with the residual baseline; beside
    each, the floor of its connections (:func:`step_floor_columns`) and its measured extra time."""
    cfg.validate()
    rows = []
    copy_bw = measure_copy_bandwidth()
    log(f"step: copy bandwidth {copy_bw / 1e9:.2f} GB/s (read + write)")
    kinds = {_kind_label(k, cfg): k for k in ["residual", *cfg.kinds]}
    for preset in cfg.presets:
        contenders = _contenders(cfg, preset, train_step_contender)
        log(f"step: {preset}: {len(contenders)} models x {cfg.repeats} rounds")
        timings = interleaved_medians(contenders, cfg.repeats, cfg.warmup)
        base = timings["residual"]["median_ms"]
        for name, t in timings.items():
            rows.append(
                dict(bench="step", preset=preset, contender=name, precision=cfg.precision,
                     compiled=cfg.compiled, batch_size=cfg.batch_size, **t, x_residual=t["median_ms"] / base,
                     extra_ms=t["median_ms"] - base, copy_gb_s=copy_bw / 1e9,
                     **step_floor_columns(cfg, preset, kinds[name], copy_bw))
            )
    return rows


def run_decode_bench(cfg: ModelBenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Generation tokens/s per preset (batch 1, KV cache), every kind vs the residual baseline."""
    cfg.validate()
    rows = []
    for preset in cfg.presets:
        contenders = _contenders(cfg, preset, decode_contender)
        log(f"decode: {preset}: {len(contenders)} models x {cfg.repeats} rounds of {cfg.new_tokens} tokens")
        with torch.no_grad():
            timings = interleaved_medians(contenders, cfg.repeats, cfg.warmup)
        base = cfg.new_tokens / timings["residual"]["median_ms"]
        kinds = {_kind_label(k, cfg): k for k in ["residual", *cfg.kinds]}
        for name, t in timings.items():
            tok_s = cfg.new_tokens / t["median_ms"] * 1e3
            rows.append(
                dict(bench="decode", preset=preset, contender=name, precision=cfg.precision, compiled=cfg.compiled,
                     new_tokens=cfg.new_tokens, **t, tokens_per_s=tok_s, x_residual=tok_s / (base * 1e3),
                     aten_ops_per_token=decode_ops_per_token(cfg, preset, kinds[name]))
            )
    return rows


def config_dict(cfg: ModelBenchConfig) -> dict:
    return asdict(cfg)
