"""Statistics of a study over seeds: mean ± sd, Student-t quantiles, paired-by-seed differences.

No scipy: the Student-t CDF is computed from the regularised incomplete beta function
(``I_x(a, b)`` by its continued fraction, Lentz's method) and inverted by bisection, to about
1e-10. A paired difference of groups A and B over their common seeds ``s`` is
``d_s = loss_A(s) - loss_B(s)``; its 95% confidence interval is ``mean(d) ± t_{0.975, k-1}
sd(d) / sqrt(k)`` for ``k`` common seeds (``sd`` with ``k - 1`` in the denominator), and the
difference is *resolved* when that interval excludes 0. With one common seed there is no
interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n", "values"}``; ``std`` is the sample sd (0 for a single value)."""
    vals = [float(v) for v in values]
    n = len(vals)
    mean = sum(vals) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "values": vals}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: int) -> float:
    """``P(T <= t)`` for Student's t with ``dof`` degrees of freedom."""
    tail = 0.5 * regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, dof: int) -> float:
    """The ``q`` quantile of Student's t with ``dof >= 1`` degrees of freedom (bisection on the CDF)."""
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"dof must be an integer >= 1, got {dof!r}")
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be strictly between 0 and 1, got {q!r}")
    if q < 0.5:
        return -t_quantile(1.0 - q, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < q:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, dof) < q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> dict:
    """Paired-by-seed difference ``a - b`` over the seeds both have (module docstring).

    Returns ``{"seeds", "n", "mean", "sd", "t", "ci_low", "ci_high", "resolved"}``; with fewer than
    two common seeds ``sd``, ``t`` and the interval are None and ``resolved`` is False.
    """
    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    out = {"seeds": seeds, "n": len(seeds), "mean": None, "sd": None, "t": None,
           "ci_low": None, "ci_high": None, "resolved": False}  # fmt: skip
    if not seeds:
        return out
    stats = mean_std(diffs)
    out["mean"] = stats["mean"]
    if len(seeds) < 2:
        return out
    t = t_quantile(0.5 + confidence / 2.0, len(seeds) - 1)
    half = t * stats["std"] / math.sqrt(len(seeds))
    out.update(sd=stats["std"], t=t, ci_low=stats["mean"] - half, ci_high=stats["mean"] + half)
    out["resolved"] = bool(out["ci_low"] > 0 or out["ci_high"] < 0)
    return out
