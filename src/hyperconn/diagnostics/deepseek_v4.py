"""DeepSeek-V4's hyper-connections (``transformers``' ``DeepseekV4HyperConnection`` / ``DeepseekV4HyperHead``)
read in this library's convention.

transformers stays optional: the classes are recognised by name (their MRO), nothing here imports
transformers except :func:`check_transformers`, which does so lazily.

The module's math (``modeling_deepseek_v4.py``, verified against transformers
:data:`VERIFIED_TRANSFORMERS`). Per token, streams ``X`` with rows ``x_1 .. x_n`` (``n = hc_mult``,
width ``C``), ``u = vec(X) / sqrt(mean(vec(X)^2) + eps_rms)`` (``input_norm``, no weight), ``z = fn u``
split into ``z_pre (n)``, ``z_post (n)``, ``z_comb (n, n)`` (row-major), ``base`` split the same way
and ``scale = (s_pre, s_post, s_comb)``:

    pre  = sigmoid(s_pre z_pre + b_pre) + eps_hc
    post = 2 sigmoid(s_post z_post + b_post)
    L    = s_comb z_comb + b_comb
    K    = softmax_row(L) + eps_hc;  K <- K / (colsum(K) + eps_hc)
    (hc_sinkhorn_iters - 1) times:   K <- K / (rowsum(K) + eps_hc);  K <- K / (colsum(K) + eps_hc)
    comb = K

The module returns ``(post, comb, collapsed)`` with ``collapsed = sum_i pre_i x_i``; the decoder
layer feeds ``F = branch(collapsed)`` (the layer norm is part of the branch) and forms

    x'_k = post_k F + sum_j comb[j, k] x_j        (``post * F + comb^T @ X``: a sum over comb's FIRST index)

This library's convention is ``x'_j = sum_i H_res[i, j] x_i + H_post[j] F(sum_i H_pre[i] x_i)``, so

    H_pre = pre,   H_post = post,   H_res = comb (not transposed),   Sinkhorn logits = L.

``comb`` is the Sinkhorn iterate of ``exp(L)`` starting with a row normalisation and ending with a
column one (columns sum to 1 up to ``eps_hc``, rows approximately); this library's
``sinkhorn_log(L, k)`` alternates column then row, so its fixed point is the same matrix.

The head (``hc_head``) collapses the streams once more before the final RMSNorm, with learned
per-token readout weights ``w = sigmoid(hc_scale hc_fn u + hc_base) + eps_hc``: output
``sum_i w_i x_i``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONNECTION_CLASS",
    "CONSISTENCY_TOL",
    "HEAD_CLASS",
    "MODEL_CLASS",
    "VERIFIED_TRANSFORMERS",
    "DeepseekV4Connection",
    "Readout",
    "ReadoutRecorder",
    "check_consistent",
    "check_transformers",
    "connections",
    "heads",
    "head_weights",
    "is_connection",
    "is_deepseek_v4",
    "is_head",
    "mixing",
    "sinkhorn_logits",
]

CONNECTION_CLASS = "DeepseekV4HyperConnection"
HEAD_CLASS = "DeepseekV4HyperHead"
MODEL_CLASS = "DeepseekV4ForCausalLM"
VERIFIED_TRANSFORMERS = "5.24.0"
"""The transformers release whose DeepSeek-V4 hyper-connection math the mapping above was checked
against (tests/hf/test_deepseek_v4.py); older releases are refused."""

CONSISTENCY_TOL = 1e-4
"""Largest relative (Frobenius) gap allowed between a coefficient recomputed here and the module's own
output (the module computes in float32); a larger gap means the installed transformers changed the
math, and the mapping is no longer valid."""


def _is_instance_of(module: Any, class_name: str) -> bool:
    return any(cls.__name__ == class_name and cls.__module__.startswith("transformers")
               for cls in type(module).__mro__)  # fmt: skip


def is_connection(module: Any) -> bool:
    """``module`` is a transformers ``DeepseekV4HyperConnection`` (or a subclass)."""
    return _is_instance_of(module, CONNECTION_CLASS)


def is_head(module: Any) -> bool:
    """``module`` is a transformers ``DeepseekV4HyperHead`` (or a subclass)."""
    return _is_instance_of(module, HEAD_CLASS)


def is_deepseek_v4(model: nn.Module) -> bool:
    """``model`` is a ``DeepseekV4ForCausalLM`` or contains a ``DeepseekV4HyperConnection``."""
    return _is_instance_of(model, MODEL_CLASS) or any(is_connection(m) for m in model.modules())


def _release(version: str) -> tuple[int, ...]:
    """``"5.24.0.dev0"`` -> ``(5, 24, 0)``: the leading numeric components (``()`` when there are none)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def check_transformers() -> str:
    """Return the installed transformers version, or raise ``RuntimeError`` naming it when it has
    no ``deepseek_v4`` model or is older than :data:`VERIFIED_TRANSFORMERS`."""
    try:
        transformers = importlib.import_module("transformers")
    except ImportError as err:
        raise ImportError(
            "DeepSeek-V4 support needs transformers, which is not installed; "
            "install it with: pip install 'hyperconn[hf]'"
        ) from err
    version = str(getattr(transformers, "__version__", "unknown"))
    needed = f"transformers >= {VERIFIED_TRANSFORMERS} (the release its hyper-connection mapping was verified against)"
    if importlib.util.find_spec("transformers.models.deepseek_v4") is None:
        raise RuntimeError(f"transformers {version} has no deepseek_v4 model; DeepSeek-V4 support needs {needed}")
    found = _release(version)
    if not found or found < _release(VERIFIED_TRANSFORMERS):
        raise RuntimeError(f"transformers {version} is not supported for DeepSeek-V4; it needs {needed}")
    return version


def _projection(module: nn.Module, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s_pre z_pre + b_pre, s_post z_post + b_post, L)`` of a ``DeepseekV4HyperConnection``,
    in the dtypes the module computes them in; ``streams (..., n, C)``."""
    n = module.hc_mult
    flat = module.input_norm(streams.reshape(*streams.shape[:-2], -1).float())
    z = F.linear(flat, module.fn.float())
    z_pre, z_post, z_comb = z.split([n, n, n * n], dim=-1)
    b_pre, b_post, b_comb = module.base.split([n, n, n * n])
    s_pre, s_post, s_comb = module.scale.unbind(0)
    logits = z_comb.reshape(*z_comb.shape[:-1], n, n) * s_comb + b_comb.reshape(n, n)
    return z_pre * s_pre + b_pre, z_post * s_post + b_post, logits


def sinkhorn_logits(module: nn.Module, streams: torch.Tensor) -> torch.Tensor:
    """``L (..., n, n)``: the logits whose Sinkhorn iterate is ``comb`` = ``H_res``."""
    return _projection(module, streams)[2]


def mixing(module: nn.Module, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(H_pre (..., n), H_res (..., n, n), H_post (..., n))`` of a ``DeepseekV4HyperConnection`` in
    this library's convention, from its parameters and config (module docstring)."""
    pre_arg, post_arg, logits = _projection(module, streams)
    eps = module.hc_eps
    pre = torch.sigmoid(pre_arg) + eps
    post = 2 * torch.sigmoid(post_arg)
    comb = torch.softmax(logits, dim=-1) + eps
    comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    for _ in range(module.hc_sinkhorn_iters - 1):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)
        comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    return pre, comb, post


def head_weights(head: nn.Module, streams: torch.Tensor) -> torch.Tensor:
    """Readout weights ``w (..., n)`` of a ``DeepseekV4HyperHead``: its output is ``sum_i w_i x_i``."""
    flat = head.input_norm(streams.reshape(*streams.shape[:-2], -1).float())
    mixes = F.linear(flat, head.hc_fn.float())
    return torch.sigmoid(mixes * head.hc_scale.float() + head.hc_base.float()) + head.eps


@dataclass(eq=False)
class DeepseekV4Connection:
    """One ``DeepseekV4HyperConnection`` seen as this library's connections are: ``kind`` ``"mhc"``
    (DeepSeek-V4's connection is an mHC), ``num_streams``, ``layer_index``, ``sinkhorn_iters`` and
    :meth:`mixing` in this library's convention. ``module`` is the transformers module."""

    module: nn.Module
    layer_index: int
    kind: str = "mhc"

    @property
    def num_streams(self) -> int:
        return self.module.hc_mult

    @property
    def sinkhorn_iters(self) -> int:
        return self.module.hc_sinkhorn_iters

    def mixing(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return mixing(self.module, streams)

    def logits(self, streams: torch.Tensor) -> torch.Tensor:
        return sinkhorn_logits(self.module, streams)

    def parameters(self):
        return self.module.parameters()


def _layer_index(model: nn.Module, name: str, position: int) -> int:
    """The ``layer_idx`` of the decoder layer holding connection ``name`` (``position // 2`` when the
    parent has none: two connections per layer)."""
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    index = getattr(parent, "layer_idx", None)
    return index if isinstance(index, int) else position // 2


def connections(model: nn.Module) -> list[tuple[str, DeepseekV4Connection]]:
    """Every ``DeepseekV4HyperConnection`` inside ``model`` (registration order), wrapped."""
    found = [(name, m) for name, m in model.named_modules() if is_connection(m)]
    return [(name, DeepseekV4Connection(m, _layer_index(model, name, i))) for i, (name, m) in enumerate(found)]


def heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``DeepseekV4HyperHead`` inside ``model``."""
    return [(name, m) for name, m in model.named_modules() if is_head(m)]


def check_consistent(name: str, recomputed: torch.Tensor, returned: torch.Tensor, what: str) -> None:
    """Raise ``RuntimeError`` when ``||recomputed - returned||_F / ||returned||_F`` exceeds the
    tolerance (:data:`CONSISTENCY_TOL`, or 4 ulps of ``returned``'s dtype when coarser)."""
    tol = max(CONSISTENCY_TOL, 4 * torch.finfo(returned.dtype).eps)
    returned = returned.detach().to(torch.float64)
    recomputed = recomputed.detach().to(torch.float64)
    scale = float(torch.linalg.vector_norm(returned))
    gap = float(torch.linalg.vector_norm(recomputed - returned)) / max(scale, 1e-30)
    if gap > tol:
        raise RuntimeError(
            f"{name}: the {what} recomputed from the parameters differs from the module's output by {gap:.2e} "
            f"(relative); this transformers release computes DeepSeek-V4's hyper-connections differently from "
            f"{VERIFIED_TRANSFORMERS}, the release the mapping was verified against"
        )


@dataclass
class Readout:
    """One head call: readout weights ``(tokens, n)`` (float64 on the CPU)."""

    name: str
    weights: torch.Tensor


class ReadoutRecorder:
    """Context manager: while active, every ``DeepseekV4HyperHead`` call appends a :class:`Readout`
    (its per-token stream weights, checked against the head's output) to ``readouts``."""

    def __init__(self, model: nn.Module, max_tokens: int | None = None) -> None:
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens must be None or an integer >= 1, got {max_tokens!r}")
        self.heads = heads(model)
        if not self.heads:
            raise ValueError(f"{type(model).__name__} contains no {HEAD_CLASS} module")
        check_transformers()
        self.max_tokens = max_tokens
        self.readouts: list[Readout] = []
        self._handles: list[Any] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, args, kwargs, output):
            streams = args[0] if args else next(iter(kwargs.values()))
            n, width = streams.shape[-2:]
            streams = streams.detach().reshape(-1, n, width)
            out = output.detach().reshape(-1, width)
            if self.max_tokens is not None:
                streams, out = streams[: self.max_tokens], out[: self.max_tokens]
            with torch.no_grad():
                weights = head_weights(module, streams)
                collapsed = (weights.unsqueeze(-1) * streams).sum(dim=-2)
            check_consistent(name, collapsed, out, "collapse")
            self.readouts.append(Readout(name, weights.to("cpu", torch.float64)))

        return hook

    def __enter__(self) -> ReadoutRecorder:
        for name, head in self.heads:
            self._handles.append(head.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def pop(self) -> list[Readout]:
        """The readouts recorded since the last ``pop`` (and forget them)."""
        readouts, self.readouts = self.readouts, []
        return readouts
