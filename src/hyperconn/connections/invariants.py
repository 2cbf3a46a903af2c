"""What a connection kind guarantees about its residual matrix ``H_res``, by construction.

A kind declares its guarantees as a class attribute, ``invariants = ("rows_sum_to_one", ...)``,
with names from :data:`INVARIANTS`. The declaration is the one source every consumer reads: the
model skips provably inert ends from it (``columns_sum_to_one`` / ``rows_sum_to_one``),
``hyperconn analyze`` reports each declared invariant's worst violation, and the conformance kit
(:func:`hyperconn.testing.check_connection`) checks it on random inputs and parameters. A
guarantee is *exact*: it holds to float64 rounding for every input and every parameter value,
not merely after an iteration converges (mHC's Sinkhorn leaves its column sums off by its error,
so mHC does not declare ``columns_sum_to_one``).

Each :class:`Invariant` measures its violation per matrix, in float64, 0 when it holds:

==========================  ===========================================  ==========================
name                        statement                                    violation
==========================  ===========================================  ==========================
``rows_sum_to_one``         ``H 1 = 1``                                  ``max_i |sum_j H_ij - 1|``
``columns_sum_to_one``      ``1^T H = 1^T``                              ``max_j |sum_i H_ij - 1|``
``nonnegative``             ``H_ij >= 0``                                ``max(0, -min_ij H_ij)``
``spectral_norm_at_most_one``  ``||H||_2 <= 1``                          ``max(0, ||H||_2 - 1)``
``spectral_norm_one``       ``||H||_2 = 1``                              ``| ||H||_2 - 1 |``
``orthogonal``              ``H H^T = I``                                ``max |H H^T - I|``
``determinant_one``         ``det H = +1``                               ``|det H - 1|``
``identity``                ``H = I``                                    ``max |H - I|``
==========================  ===========================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Invariant:
    """One guarantee about ``H_res``: its name, the equation, and its violation per matrix."""

    name: str
    statement: str
    violation: Callable[[torch.Tensor], torch.Tensor]  # (..., n, n) float64 -> (...), 0 when it holds


def _eye(h: torch.Tensor) -> torch.Tensor:
    return torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)


def _amax(t: torch.Tensor) -> torch.Tensor:
    return t.abs().amax(dim=(-2, -1))


_ALL = (
    Invariant("rows_sum_to_one", "H 1 = 1", lambda h: (h.sum(-1) - 1).abs().amax(-1)),
    Invariant("columns_sum_to_one", "1^T H = 1^T", lambda h: (h.sum(-2) - 1).abs().amax(-1)),
    Invariant("nonnegative", "H_ij >= 0", lambda h: (-h.amin(dim=(-2, -1))).clamp_min(0)),
    Invariant(
        "spectral_norm_at_most_one", "||H||_2 <= 1",
        lambda h: (torch.linalg.matrix_norm(h, ord=2) - 1).clamp_min(0),
    ),
    Invariant("spectral_norm_one", "||H||_2 = 1", lambda h: (torch.linalg.matrix_norm(h, ord=2) - 1).abs()),
    Invariant("orthogonal", "H H^T = I", lambda h: _amax(h @ h.transpose(-1, -2) - _eye(h))),
    Invariant("determinant_one", "det H = +1", lambda h: (torch.linalg.det(h) - 1).abs()),
    Invariant("identity", "H = I", lambda h: _amax(h - _eye(h))),
)

INVARIANTS: dict[str, Invariant] = {inv.name: inv for inv in _ALL}
"""Every invariant a kind may declare, by name."""

# what one guarantee implies (a kind declares the strongest it has; consumers ask `implies`)
_IMPLIED = {
    "identity": ("rows_sum_to_one", "columns_sum_to_one", "nonnegative", "spectral_norm_one", "orthogonal",
                 "determinant_one", "spectral_norm_at_most_one"),
    "orthogonal": ("spectral_norm_one", "spectral_norm_at_most_one"),
    "spectral_norm_one": ("spectral_norm_at_most_one",),
}


def check_declared(owner: str, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple of known invariant names, or one ``ValueError`` naming the unknown one."""
    if isinstance(names, str):
        raise ValueError(f"{owner}: invariants must be a tuple of names, got the string {names!r}")
    names = tuple(names)
    for name in names:
        if name not in INVARIANTS:
            raise ValueError(f"{owner}: unknown invariant {name!r}; choose from {', '.join(INVARIANTS)}")
    return names


def closure(names: Iterable[str]) -> tuple[str, ...]:
    """The declared invariants and every one they imply, in :data:`INVARIANTS` order."""
    held = set(names)
    for name in list(held):
        held.update(_IMPLIED.get(name, ()))
    return tuple(name for name in INVARIANTS if name in held)


def violations(names: Iterable[str], h: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-matrix violation (float64, shape ``h.shape[:-2]``) of every invariant in ``names``."""
    h = h.detach().to(torch.float64)
    return {name: INVARIANTS[name].violation(h) for name in names}
