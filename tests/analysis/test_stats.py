"""Student-t quantiles against known values and closed forms; paired differences by hand."""

from __future__ import annotations

import math

import pytest

from hyperconn.analysis.stats import mean_std, paired_difference, regularized_incomplete_beta, t_cdf, t_quantile

# two-sided 95% critical values t_{0.975, dof} of standard tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 60: 2.000, 100: 1.984}  # fmt: skip


@pytest.mark.parametrize("dof", sorted(TABLE_975))
def test_t_quantile_matches_tables(dof):
    assert t_quantile(0.975, dof) == pytest.approx(TABLE_975[dof], abs=6e-4)


@pytest.mark.parametrize("q", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(q):
    assert t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-9)  # Cauchy
    assert t_quantile(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-9)
    assert t_quantile(1 - q, 5) == pytest.approx(-t_quantile(q, 5), rel=1e-12)
    assert t_cdf(t_quantile(q, 7), 7) == pytest.approx(q, abs=1e-10)


def test_incomplete_beta_closed_form_and_limits():
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b
    assert regularized_incomplete_beta(2.5, 1.0, 0.3) == pytest.approx(0.3**2.5, rel=1e-12)
    assert regularized_incomplete_beta(1.0, 3.0, 0.8) == pytest.approx(1 - 0.2**3, rel=1e-12)
    assert t_cdf(0.0, 3) == 0.5
    assert t_quantile(0.975, 100_000) == pytest.approx(1.959964, abs=1e-4)  # the normal limit


def test_paired_difference_by_hand():
    a = {0: 2.10, 1: 2.20, 2: 2.15, 5: 9.0}
    b = {0: 2.00, 1: 2.05, 2: 2.10, 3: 1.0}
    got = paired_difference(a, b)
    # d = 0.10, 0.15, 0.05: mean 0.10, sd = sqrt((0 + 0.0025 + 0.0025) / 2) = 0.05, t_{0.975,2} = 4.3026527
    half = 4.302652729911275 * 0.05 / math.sqrt(3)
    assert got["seeds"] == [0, 1, 2] and got["n"] == 3
    assert got["mean"] == pytest.approx(0.10) and got["sd"] == pytest.approx(0.05)
    assert got["ci_low"] == pytest.approx(0.10 - half) and got["ci_high"] == pytest.approx(0.10 + half)
    assert got["ci_low"] < 0 and not got["resolved"]  # 0.10 ± 0.124: not resolved
    tight = paired_difference({0: 1.0, 1: 1.1, 2: 1.2}, {0: 0.5, 1: 0.62, 2: 0.69})
    assert tight["resolved"] and tight["ci_low"] > 0  # d = 0.5, 0.48, 0.51
    reverse = paired_difference({0: 0.5, 1: 0.62, 2: 0.69}, {0: 1.0, 1: 1.1, 2: 1.2})
    assert reverse["resolved"] and reverse["ci_high"] == pytest.approx(-tight["ci_low"])


def test_paired_difference_too_few_seeds_and_mean_std():
    one = paired_difference({0: 1.0}, {0: 0.25})
    assert one["mean"] == 0.75 and one["ci_low"] is None and not one["resolved"]
    assert paired_difference({0: 1.0}, {1: 1.0})["n"] == 0
    stats = mean_std([1.0, 2.0, 4.0])
    assert stats["mean"] == pytest.approx(7 / 3) and stats["std"] == pytest.approx(math.sqrt(7 / 3))
    assert mean_std([3.0])["std"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="dof must be an integer >= 1, got 0"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="q must be strictly between 0 and 1, got 1.0"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="x must be in"):
        regularized_incomplete_beta(1.0, 1.0, 1.5)
