"""Helpers shared by several test files: ``from tests.support import perturb, TINY, micro_settings``.

(``--import-mode=importlib`` makes ``tests`` a namespace package, so this module imports by its
full name from any test folder; a folder's own helpers stay in its ``helpers.py``.)
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch

import hyperconn

# The smallest decoder the model tests build: ``ModelConfig(**TINY, connection=...)`` or a config
# dict's ``"model"`` entry. Change a value with ``{**TINY, "mlp_dim": 32}``.
TINY = {"vocab_size": 32, "dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8, "mlp_dim": 24,
        "max_seq_len": 16}  # fmt: skip

# A decoder twice TINY's width (``dim`` 32, ``head_dim`` 16) for the bf16 numerics tests:
# :func:`small_model` builds it.
SMALL = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "head_dim": 16, "mlp_dim": 64}


def small_model(kind: str, seed: int = 0, **fields):
    """``LanguageModel(ModelConfig(**SMALL, **fields, connection=ConnectionConfig(kind)))``, built
    after ``torch.manual_seed(seed)`` (so the same arguments give the same parameters)."""
    from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig

    cfg = ModelConfig(**{**SMALL, **fields}, connection=ConnectionConfig(kind))
    torch.manual_seed(seed)
    return LanguageModel(cfg)


# A microscopic model and schedule as ``--set`` overrides of the ``demo`` preset: a run on a ~30 KB
# corpus takes about a second. :func:`micro_settings` returns it with changes.
MICRO = (
    "model.dim=16",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.n_kv_heads=1",
    "model.head_dim=8",
    "model.mlp_dim=32",
    "model.max_seq_len=32",
    "train.seq_len=16",
    "train.batch_size=4",
    "train.steps=8",
    "train.warmup_steps=2",
    "train.eval_interval=4",
    "train.eval_batches=2",
    "train.log_interval=1",
    "train.checkpoint_interval=4",
    "train.progress=false",
    "train.threads=1",
    "train.precision=fp32",
    "train.lr=1e-2",
    "train.min_lr=1e-3",
)


def micro_settings(*changes: str, without: Iterable[str] = ()) -> list[str]:
    """:data:`MICRO` with each ``"key=value"`` of ``changes`` replacing the setting of that key in
    place (a key :data:`MICRO` lacks is appended), so every key appears once.

    ``without``: keys of :data:`MICRO` to leave out, e.g. ``("train.steps",)`` where a named flag
    (``--steps``, ``steps=``) must set them: a ``--set`` override beats a named flag.
    """
    settings = {s.split("=", 1)[0]: s for s in MICRO}
    for key in without:
        if key not in settings:
            raise ValueError(f"micro_settings without={key!r}: not a key of MICRO ({', '.join(settings)})")
        del settings[key]
    for change in changes:
        key, sep, _ = change.partition("=")
        if not sep or not key:
            raise ValueError(f"micro_settings change {change!r} is not of the form 'key=value'")
        settings[key] = change
    return list(settings.values())


def slow_unless(fast: bool, *values):
    """One ``pytest.mark.parametrize`` case: ``values`` as they are when ``fast``, else marked
    ``slow`` (``make test`` runs it, ``make test-fast`` leaves it out). Keeps one representative of a
    sweep in the fast set: ``[slow_unless(kind == "shc", kind, n) for kind, n in CASES]``."""
    case = values[0] if len(values) == 1 else values
    return case if fast else pytest.param(*values, marks=pytest.mark.slow)


def set_args(settings: Iterable[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]`` for the command line."""
    return [arg for setting in settings for arg in ("--set", setting)]


def _tensors(params) -> Iterable[torch.Tensor]:
    """The tensors of ``params``: a module's parameters, or each item (a module's parameters or a tensor)."""
    if isinstance(params, torch.nn.Module):
        yield from params.parameters()
        return
    for item in params:
        if isinstance(item, torch.nn.Module):
            yield from item.parameters()
        elif isinstance(item, torch.Tensor):
            yield item
        else:
            raise ValueError(f"perturb takes modules and tensors, not {type(item).__name__}")


@torch.no_grad()
def perturb(params, scale: float = 0.3, seed: int = 0) -> None:
    """Move parameters off their initial values in place: ``p += scale * N(0, 1)``, the noise drawn
    from one generator seeded with ``seed``, tensor after tensor in order, in each tensor's dtype.

    ``params``: a module (all its parameters), or an iterable of modules and tensors (e.g.
    ``model.connections()``). Near-identity initial connections hide wrong mixing; perturbed ones
    make every coefficient matter.
    """
    generator = torch.Generator().manual_seed(seed)
    for p in _tensors(params):
        p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def perturbed_connection(
    kind: str, n: int, dim: int, scale: float = 0.5, seed: int = 0, layer_index: int = 1, **options
) -> torch.nn.Module:
    """``hyperconn.make_connection(kind, n, dim, layer_index=..., **options)`` with every parameter
    perturbed by :func:`perturb` (``scale``, ``seed``)."""
    conn = hyperconn.make_connection(kind, n, dim, layer_index=layer_index, **options)
    perturb(conn, scale=scale, seed=seed)
    return conn
