"""Values a connection derives from its parameters, cached for the gradient-free path.

One decode token calls every connection on a ``(1, 1, n, C)`` tensor: the cost is the number of
ATen ops, not the data. Folding the RMSNorm gain and the gates into the projection weight (and
building the kind's other parameter-only tensors) is a handful of ops per call that give the same
result every time until a parameter changes, so the gradient-free path builds them once.

The cache is keyed on every parameter's identity, storage address and ``_version`` counter
(bumped by every in-place write: optimizer steps, ``load_state_dict``, ``reset_parameters``,
``.data`` copies through ``copy_``), plus the dtype and device asked for; any change rebuilds it.
It is only consulted with autograd off (``torch.is_grad_enabled()`` false), so a cached tensor is
never part of a graph and no gradient can miss it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

import torch


class ParameterCache:
    """One cached value, rebuilt whenever a parameter it was built from changes."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: object = None

    def get(self, params: Iterable[torch.Tensor], extra: Hashable, build: Callable[[], object]) -> object:
        key = (extra, *[(id(p), p.data_ptr(), p._version) for p in params if p is not None])
        if key != self._key:
            with torch.no_grad():
                self._value = build()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None


def inference_path() -> bool:
    """Whether the cached gradient-free path applies: autograd off and not tracing for compile
    (``torch.compile`` sees the plain path and folds the constants itself)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()
