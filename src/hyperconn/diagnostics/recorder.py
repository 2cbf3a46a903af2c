"""Record every hyper-connection call of a model: the streams it got, read through ``mixing``.

Forward-pre-hooks on every :class:`hyperconn.HyperConnection` inside any ``nn.Module`` see the streams
each connection is called with (``conn(streams, branch)``) and read the coefficients through the
public ``conn.mixing(streams)`` under ``no_grad``; nothing private is touched. For mHC the
Sinkhorn logits come from the public pieces ``conn.coefficients``, ``conn.group_sizes`` and
``conn.res_logits``.

The same recorder reads DeepSeek-V4's connections (transformers' ``DeepseekV4HyperConnection``,
recognised by class name, transformers never imported here): a forward hook sees each call's streams
and output, :mod:`.deepseek_v4` recomputes ``H_pre``, ``H_res``, ``H_post`` and the Sinkhorn
logits in this library's convention from the module's parameters, and checks ``H_post`` and
``H_res`` against what the module returned. Such a call's ``module`` is a
:class:`~hyperconn.diagnostics.deepseek_v4.DeepseekV4Connection` (``kind`` ``"mhc"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..connections import HyperConnection
from . import deepseek_v4
from .deepseek_v4 import DeepseekV4Connection

__all__ = ["Call", "MixingRecorder", "hyper_connections", "mhc_logits"]


@dataclass
class Call:
    """One connection call: which module, and its coefficients flattened to ``(tokens, ...)``
    (float64 on the CPU)."""

    name: str
    module: HyperConnection | DeepseekV4Connection
    pre: torch.Tensor  # (N, n)
    res: torch.Tensor  # (N, n, n)
    post: torch.Tensor  # (N, n)
    logits: torch.Tensor | None  # (N, n, n), mHC only (and only when the recorder asks for them)


def hyper_connections(model: nn.Module) -> list[tuple[str, HyperConnection]]:
    """Every :class:`HyperConnection` inside ``model`` with its qualified name (registration order)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, HyperConnection)]


def mhc_logits(conn: HyperConnection, streams: torch.Tensor) -> torch.Tensor:
    """The pre-Sinkhorn logits ``L`` (..., n, n) of an mHC connection, through its public methods."""
    coef = conn.coefficients(streams)
    groups = list(torch.split(coef, conn.group_sizes, dim=-1))
    return conn.res_logits(groups[2:])


def _flat(t: torch.Tensor, trailing: int, max_tokens: int | None) -> torch.Tensor:
    """``(..., *trailing dims)`` -> ``(tokens, *trailing dims)`` in float64 on the CPU."""
    t = t.detach().reshape(-1, *t.shape[t.dim() - trailing :])
    if max_tokens is not None:
        t = t[:max_tokens]
    return t.to("cpu", torch.float64)


class MixingRecorder:
    """Context manager: while active, every connection call appends a :class:`Call` to ``calls``.

    ``max_tokens`` keeps only the first tokens of each call (the mixing is computed on those
    only); ``with_logits`` also records mHC's Sinkhorn logits. Hooks are removed on exit, also
    when the block raises.
    """

    def __init__(self, model: nn.Module, max_tokens: int | None = None, with_logits: bool = True) -> None:
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens must be None or an integer >= 1, got {max_tokens!r}")
        self.connections = hyper_connections(model)
        self.deepseek_v4 = deepseek_v4.connections(model)
        if not self.connections and not self.deepseek_v4:
            raise ValueError(
                f"{type(model).__name__} contains no HyperConnection (or {deepseek_v4.CONNECTION_CLASS}) module"
            )
        if self.deepseek_v4:
            deepseek_v4.check_transformers()
        self.max_tokens = max_tokens
        self.with_logits = with_logits
        self.calls: list[Call] = []
        self._handles: list[Any] = []

    def _hook(self, name: str):
        def hook(module: HyperConnection, args, kwargs):
            streams = args[0] if args else kwargs["streams"]
            n = module.num_streams
            if self.max_tokens is not None:
                streams = streams.detach().reshape(-1, *streams.shape[-2:])[: self.max_tokens]
            with torch.no_grad():
                pre, res, post = module.mixing(streams)
                logits = mhc_logits(module, streams) if self.with_logits and module.kind == "mhc" else None
            self.calls.append(
                Call(
                    name,
                    module,
                    _flat(pre, 1, self.max_tokens),
                    _flat(res, 2, self.max_tokens).reshape(-1, n, n),
                    _flat(post, 1, self.max_tokens),
                    None if logits is None else _flat(logits, 2, self.max_tokens),
                )
            )

        return hook

    def _deepseek_v4_hook(self, name: str, conn: DeepseekV4Connection):
        def hook(module: nn.Module, args, kwargs, output):
            streams = args[0] if args else kwargs["hidden_streams"]
            n, width = streams.shape[-2:]
            streams = streams.detach().reshape(-1, n, width)
            post_out, comb_out = output[0].reshape(-1, n), output[1].reshape(-1, n, n)
            if self.max_tokens is not None:
                streams, post_out, comb_out = (t[: self.max_tokens] for t in (streams, post_out, comb_out))
            with torch.no_grad():
                pre, res, post = conn.mixing(streams)
                logits = conn.logits(streams) if self.with_logits else None
            deepseek_v4.check_consistent(name, post, post_out, "H_post")
            deepseek_v4.check_consistent(name, res, comb_out, "H_res")
            self.calls.append(
                Call(name, conn, _flat(pre, 1, None), _flat(res, 2, None), _flat(post, 1, None),
                     None if logits is None else _flat(logits, 2, None))
            )  # fmt: skip

        return hook

    def __enter__(self) -> MixingRecorder:
        for name, conn in self.connections:
            self._handles.append(conn.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        for name, conn in self.deepseek_v4:
            hook = self._deepseek_v4_hook(name, conn)
            self._handles.append(conn.module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def pop(self) -> list[Call]:
        """The calls recorded since the last ``pop`` (and forget them)."""
        calls, self.calls = self.calls, []
        return calls
