"""Statistics of a study over seeds: mean ± sd, Student-t, paired-by-seed differences, Holm.

No scipy: the Student-t CDF is computed from the regularised incomplete beta function
(``I_x(a, b)`` by its continued fraction, Lentz's method) and inverted by bisection, to about
1e-10; the noncentral t's tail probabilities by Gauss-Legendre quadrature over the chi-distributed
denominator (:func:`noncentral_t_power`).

A paired difference of groups A and B over their ``k`` common seeds ``s`` is
``d_s = loss_A(s) - loss_B(s)``, with mean ``m`` and sample sd ``sd`` (``k - 1`` in the
denominator). Per pair (:func:`paired_difference`):

- 95% confidence interval ``m ± t_{0.975, k-1} sd / sqrt(k)``;
- paired t statistic ``T = m / (sd / sqrt(k))`` and its two-sided p-value
  ``p = P(|T_{k-1}| >= |T|) = I_{(k-1)/(k-1+T^2)}((k-1)/2, 1/2)``;
- minimum detectable difference at 80% power, per-comparison ``alpha = 0.05``: the true
  difference the two-sided paired t-test would detect four times in five, with the observed ``sd``
  taken as the true one. Under a true difference ``delta`` the statistic ``T`` has the noncentral
  t distribution with ``k - 1`` degrees of freedom and noncentrality ``lambda = delta sqrt(k) / sd``;
  its power is ``P(|T| > t_{1-alpha/2, k-1})`` (:func:`noncentral_t_power`), and
  ``mdd_80 = lambda_80 sd / sqrt(k)`` with ``lambda_80`` the noncentrality of power 0.8
  (:func:`detectable_noncentrality`). The familiar shortcut
  ``(t_{1-alpha/2, k-1} + t_{0.8, k-1}) sd / sqrt(k)`` (central t) understates it at few seeds
  (by about 14% at k = 2).

Over all pairs of a study (:func:`adjust_pairs`): the Holm step-down adjusted p-value; with the
``m`` p-values sorted ``p_(1) <= ... <= p_(m)``,
``p_holm_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))``. A pair is *resolved* when
``p_holm < 0.05`` (family-wise error rate 5% over the study's pairs). With one common seed there
is no sd, no interval and no p-value: such a pair is never resolved and not counted in ``m``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise level of the Holm-adjusted p-values, and the per-comparison alpha of mdd_80
POWER = 0.8


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


def t_two_sided_p(t: float, dof: int) -> float:
    """Two-sided p-value ``P(|T| >= |t|)`` of Student's t with ``dof`` degrees of freedom."""
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"dof must be an integer >= 1, got {dof!r}")
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values in the input order (module docstring): monotone in the
    sorted order, capped at 1."""
    vals = [float(p) for p in pvalues]
    bad = [p for p in vals if not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"p-values must be in [0, 1], got {bad[0]!r}")
    m = len(vals)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: vals[i])):
        running = max(running, min(1.0, (m - rank) * vals[i]))
        adjusted[i] = running
    return adjusted


QUADRATURE_NODES = 400
CHI_HALF_WIDTH = 12.0  # the quadrature covers 1 ± 12/sqrt(dof) (clipped at 0) of the chi / sqrt(dof) variable


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@functools.lru_cache(maxsize=64)
def _chi_quadrature(dof: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``s`` and weights ``w`` with ``sum w f(s) ~ E[f(S)]`` for ``S = sqrt(V / dof)``,
    ``V`` chi-square with ``dof`` degrees of freedom: density
    ``2 (dof/2)^(dof/2) / Gamma(dof/2) s^(dof-1) exp(-dof s^2 / 2)`` on ``s > 0``."""
    lo = max(0.0, 1.0 - CHI_HALF_WIDTH / math.sqrt(dof))
    hi = 1.0 + CHI_HALF_WIDTH / math.sqrt(dof)
    x, w = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    s = lo + (hi - lo) * (x + 1.0) / 2.0
    half = dof / 2.0
    log_density = (math.log(2.0) + half * math.log(half) - math.lgamma(half)
                   + (dof - 1) * np.log(s) - half * s * s)  # fmt: skip
    return s, w * (hi - lo) / 2.0 * np.exp(log_density)


def noncentral_t_power(noncentrality: float, dof: int, t_crit: float) -> float:
    """``P(|T| > t_crit)`` for ``T`` noncentral t with ``dof`` degrees of freedom and the given
    noncentrality ``lambda``: with ``T = (Z + lambda) / S``, ``Z`` standard normal and ``S`` as in
    :func:`_chi_quadrature`, ``P(T > t) = E[Phi(lambda - t S)]`` and ``P(T < -t) = E[Phi(-t S - lambda)]``,
    the expectation by Gauss-Legendre quadrature (about 1e-10 here)."""
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise ValueError(f"dof must be an integer >= 1, got {dof!r}")
    s, w = _chi_quadrature(dof)
    tails = [_normal_cdf(noncentrality - t_crit * si) + _normal_cdf(-t_crit * si - noncentrality) for si in s]
    return float(np.dot(w, tails))


@functools.lru_cache(maxsize=256)
def detectable_noncentrality(dof: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The noncentrality ``lambda >= 0`` at which the two-sided t-test of level ``alpha`` with
    ``dof`` degrees of freedom has the given power (bisection on :func:`noncentral_t_power`,
    which increases with ``lambda``)."""
    if not alpha < power < 1.0:
        raise ValueError(f"power must be in (alpha, 1), got {power!r}")
    t_crit = t_quantile(1.0 - alpha / 2.0, dof)
    lo, hi = 0.0, 1.0
    while noncentral_t_power(hi, dof, t_crit) < power:
        lo, hi = hi, 2.0 * hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if noncentral_t_power(mid, dof, t_crit) < power else (lo, mid)
        if hi - lo < 1e-10 * hi:
            break
    return 0.5 * (lo + hi)


def mdd(sd: float, k: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable paired difference ``lambda sd / sqrt(k)``, ``lambda`` the noncentrality
    at which the two-sided paired t-test over ``k`` seeds has the given power (module docstring)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k (common seeds) must be an integer >= 2, got {k!r}")
    return detectable_noncentrality(k - 1, alpha, power) * sd / math.sqrt(k)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> dict:
    """Paired-by-seed difference ``a - b`` over the seeds both have (module docstring).

    Returns ``{"seeds", "n", "mean", "sd", "t_crit", "ci_low", "ci_high", "t_stat", "p", "mdd_80"}``;
    with fewer than two common seeds all but ``seeds``, ``n`` and ``mean`` are None. A zero ``sd``
    with a nonzero mean gives ``t_stat = ±inf`` and ``p = 0``; zero sd and zero mean ``p = 1``.
    """
    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    out = {"seeds": seeds, "n": len(seeds), "mean": None, "sd": None, "t_crit": None,
           "ci_low": None, "ci_high": None, "t_stat": None, "p": None, "mdd_80": None}  # fmt: skip
    if not seeds:
        return out
    stats = mean_std(diffs)
    out["mean"] = stats["mean"]
    k = len(seeds)
    if k < 2:
        return out
    sd, mean = stats["std"], stats["mean"]
    t_crit = t_quantile(0.5 + confidence / 2.0, k - 1)
    se = sd / math.sqrt(k)
    half = t_crit * se
    degenerate = 0.0 if mean == 0 else math.copysign(math.inf, mean)  # sd = 0
    t_stat = mean / se if se > 0 else degenerate
    out.update(sd=sd, t_crit=t_crit, ci_low=mean - half, ci_high=mean + half, t_stat=t_stat,
               p=t_two_sided_p(t_stat, k - 1), mdd_80=mdd(sd, k))  # fmt: skip
    return out


def verdict(pair: Mapping, alpha: float = ALPHA) -> str:
    """``resolved``; or, when the uncorrected interval excludes 0 but the Holm-adjusted p does not
    reach ``alpha``, that; or what the interval still allows; or why there is no test."""
    if pair.get("p") is None:
        return "no test (fewer than two common seeds)"
    if pair["resolved"]:
        return "resolved"
    if pair["ci_low"] > 0 or pair["ci_high"] < 0:
        return (f"not resolved: the uncorrected interval excludes 0, the Holm-adjusted p "
                f"({pair['p_holm']:.2g}) is not below {alpha:g}")  # fmt: skip
    bound = max(abs(pair["ci_low"]), abs(pair["ci_high"]))
    return f"not detected (the interval excludes differences larger than {bound:.4f})"


OUTSIDE_FAMILY = "outside the family: uncorrected p, no verdict"


def adjust_pairs(pairs: Sequence[Mapping], alpha: float = ALPHA, family: Sequence[bool] | None = None) -> list[dict]:
    """Every pair (from :func:`paired_difference`) with ``in_family``, ``p_holm`` (Holm over the
    family's pairs that have a p-value), ``resolved = p_holm < alpha`` and its :func:`verdict`
    added. ``family`` marks the pairs the correction covers (None: every pair); a pair outside it
    keeps its uncorrected ``p`` and gets no ``p_holm`` and no verdict."""
    family = [True] * len(pairs) if family is None else list(family)
    if len(family) != len(pairs):
        raise ValueError(f"family marks {len(family)} pairs, there are {len(pairs)}")
    tested = [i for i, p in enumerate(pairs) if p.get("p") is not None and family[i]]
    adjusted = dict(zip(tested, holm([pairs[i]["p"] for i in tested]), strict=True))
    out = []
    for i, pair in enumerate(pairs):
        entry = {**pair, "in_family": family[i], "p_holm": adjusted.get(i)}
        entry["resolved"] = entry["p_holm"] is not None and entry["p_holm"] < alpha
        entry["verdict"] = verdict(entry, alpha) if family[i] else OUTSIDE_FAMILY
        out.append(entry)
    return out

