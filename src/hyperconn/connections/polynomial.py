"""Polynomials in a few per-token numbers, compiled to one gather, one product and one GEMM.

The gradient-free path of a kind whose coefficient math is polynomial (after its one elementwise
nonlinearity) evaluates every output as ``sum_r M[r, o] prod_d a[idx[r, d]]``: the monomials of
the activations ``a`` (tokens, K) are ``a[:, idx].prod(-1)`` (idx (R, D), padded to degree ``D``
with the index of a column that is exactly 1) and the outputs ``monomials @ M``: three ATen ops
whatever the polynomial.

A :class:`Poly` maps a sorted tuple of column indices (the monomial; ``()`` is the constant) to
its float64 coefficient. Built once per ``n`` from the kind's formulas, so the compiled map is
the same arithmetic reorganised, not a second definition of it.
"""

from __future__ import annotations

from collections import defaultdict

import torch

Poly = dict[tuple[int, ...], float]


def const(value: float) -> Poly:
    return {(): float(value)} if value != 0 else {}


def var(index: int, scale: float = 1.0) -> Poly:
    """``scale * a[index]``."""
    return {(index,): float(scale)} if scale != 0 else {}


def add(*polys: Poly) -> Poly:
    out: defaultdict[tuple[int, ...], float] = defaultdict(float)
    for p in polys:
        for mono, c in p.items():
            out[mono] += c
    return {m: c for m, c in out.items() if c != 0}


def scale(p: Poly, factor: float) -> Poly:
    return {m: c * factor for m, c in p.items()} if factor != 0 else {}


def mul(*polys: Poly) -> Poly:
    out: Poly = {(): 1.0}
    for p in polys:
        acc: defaultdict[tuple[int, ...], float] = defaultdict(float)
        for m1, c1 in out.items():
            for m2, c2 in p.items():
                acc[tuple(sorted(m1 + m2))] += c1 * c2
        out = {m: c for m, c in acc.items() if c != 0}
    return out


def linear(coefs: torch.Tensor, indices: list[int | None]) -> Poly:
    """``sum_i coefs[i] * a[indices[i]]`` (``None``: the constant 1)."""
    terms = [const(float(c)) if i is None else var(i, float(c)) for c, i in zip(coefs.tolist(), indices, strict=True)]
    return add(*terms)


def compile_polys(outputs: list[Poly], one: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx (R, D) long, M (R, len(outputs)) float64)`` with ``outputs[o] = sum_r M[r, o]
    prod_d a[idx[r, d]]``; ``one`` is the index of a column of ``a`` that is exactly 1 (pads every
    monomial to the highest degree ``D``, at least 1)."""
    monomials = sorted({m for p in outputs for m in p}, key=lambda m: (len(m), m))
    degree = max([1, *map(len, monomials)])
    row = {m: r for r, m in enumerate(monomials)}
    mat = torch.zeros(len(monomials), len(outputs), dtype=torch.float64)
    for o, p in enumerate(outputs):
        for m, c in p.items():
            mat[row[m], o] = c
    idx = torch.tensor([list(m) + [one] * (degree - len(m)) for m in monomials], dtype=torch.long)
    return idx, mat


def exponents(idx: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """(R, len(groups)): how many factors of each monomial fall in each group of columns (the
    power of a per-group scale that a parameter multiplies into the map)."""
    return torch.stack([torch.isin(idx, torch.tensor(g, dtype=torch.long)).sum(-1) for g in groups], dim=-1)


# tanh(50) and sigmoid(50) round to exactly 1 in float32 and float64: a projection column with zero
# weight and this bias is the constant 1 the compiled monomials are padded with
ONE_LOGIT = 50.0
