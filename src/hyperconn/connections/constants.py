"""Exact constant tensors of the connections (Helmert basis, ``J``, permutation matrices...).

A constant is a pure function of a few integers (``n``, the coefficient group sizes), so it is
not module state at all: no buffer to round under ``module.bfloat16()``, to leave uninitialised
under ``to_empty``, to miss in ``torch.func.functional_call`` or to carry in a ``state_dict``.
:func:`constant` builds it in float64 (or as an integer tensor) and hands it out in the dtype and
device asked for, memoised in eager mode (a build is a dozen tiny ops: the bulk of a one-token
decode call). Under ``torch.compile`` it is built inline, where Inductor folds it away.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

_MEMO: dict[tuple, torch.Tensor] = {}


def constant(
    build: Callable[..., torch.Tensor], args: tuple[Hashable, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``build(*args)`` (a pure function returning a CPU tensor) cast to ``dtype`` on ``device``."""
    if torch.compiler.is_compiling():
        return build(*args).to(dtype=dtype, device=device)
    key = (build.__module__, build.__qualname__, args, dtype, torch.device(device))
    value = _MEMO.get(key)
    if value is None:
        with torch.inference_mode(False):  # kept for later autograd use, even if first asked for in generate
            value = build(*args).to(dtype=dtype, device=device)
        _MEMO[key] = value
    return value


def group_index(sizes: tuple[int, ...]) -> torch.Tensor:
    """``[0]*sizes[0] + [1]*sizes[1] + ...``: which gate scales each coefficient."""
    return torch.tensor([g for g, size in enumerate(sizes) for _ in range(size)], dtype=torch.long)


def centre_matrix(n: int) -> torch.Tensor:
    """``J = 11^T / n`` (n, n), float64."""
    return torch.full((n, n), 1.0 / n, dtype=torch.float64)


def identity_matrix(n: int) -> torch.Tensor:
    """``I_n`` (n, n), float64."""
    return torch.eye(n, dtype=torch.float64)
