"""Student-t quantiles and p-values against known values and closed forms; paired differences,
Holm adjustment and the minimum detectable difference by hand and against a textbook data set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hyperconn.analysis.stats import (
    ALPHA,
    POWER,
    adjust_pairs,
    detectable_noncentrality,
    holm,
    mdd,
    mean_std,
    noncentral_t_power,
    paired_difference,
    regularized_incomplete_beta,
    t_cdf,
    t_quantile,
    t_two_sided_p,
)

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
    # T = 0.10 / (0.05 / sqrt(3)) = 2 sqrt(3); dof 2: p = 1 - |T| / sqrt(2 + T^2) = 1 - sqrt(12 / 14)
    assert got["t_stat"] == pytest.approx(2 * math.sqrt(3)) and got["p"] == pytest.approx(1 - math.sqrt(6 / 7))
    assert got["ci_low"] < 0 and got["p"] > 0.05  # 0.10 ± 0.124: the interval holds 0
    (alone,) = adjust_pairs([got])
    assert not alone["resolved"] and alone["p_holm"] == got["p"]
    assert alone["verdict"] == f"not detected (the interval excludes differences larger than {0.10 + half:.4f})"
    tight = paired_difference({0: 1.0, 1: 1.1, 2: 1.2}, {0: 0.5, 1: 0.62, 2: 0.69})
    assert tight["ci_low"] > 0 and tight["p"] < 0.05  # d = 0.5, 0.48, 0.51
    reverse = paired_difference({0: 0.5, 1: 0.62, 2: 0.69}, {0: 1.0, 1: 1.1, 2: 1.2})
    assert reverse["ci_high"] == pytest.approx(-tight["ci_low"]) and reverse["p"] == pytest.approx(tight["p"])
    assert reverse["t_stat"] == pytest.approx(-tight["t_stat"])
    assert [p["verdict"] for p in adjust_pairs([tight])] == ["resolved"]


def test_two_sided_p_values_of_known_t_statistics():
    # the two-sided 5% critical values of the tables (3 decimals) give p = 0.05 to within the rounding
    assert t_two_sided_p(2.776, 4) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(-4.303, 2) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, rel=1e-12)  # Cauchy: 1 - 2 atan(1) / pi
    assert t_two_sided_p(0.0, 7) == 1.0 and t_two_sided_p(math.inf, 3) == 0.0
    for dof in (1, 3, 10):
        assert t_two_sided_p(t_quantile(0.995, dof), dof) == pytest.approx(0.01, rel=1e-8)


def test_holm_worked_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 2 x 0.4 = 0.8; 1 x 0.5 < 0.8: monotone
    assert holm([0.6, 0.7, 0.9]) == [1.0, 1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
    with pytest.raises(ValueError, match="p-values must be in \\[0, 1\\], got 1.5"):
        holm([0.1, 1.5])


def test_paired_t_test_on_the_sleep_data():
    # Student (1908) / Cushny & Peebles: extra sleep (hours) of 10 patients under two drugs.
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    # By hand: d = drug2 - drug1 = 1.2 2.4 1.3 1.3 0.0 1.0 1.8 0.8 4.6 1.4, sum 15.8, mean 1.58;
    # squared deviations sum to 13.616, sd = sqrt(13.616 / 9) = 1.229995, se = sd / sqrt(10) = 0.388954;
    # T = 1.58 / 0.388954 = 4.0621 with 9 dof, two-sided p = 0.002833; 95% CI 1.58 ± 2.262157 se =
    # [0.7001, 2.4599] (the values R's t.test(paired = TRUE) prints for this set).
    got = paired_difference(dict(enumerate(drug2)), dict(enumerate(drug1)))
    assert got["n"] == 10 and got["mean"] == pytest.approx(1.58)
    assert got["sd"] == pytest.approx(math.sqrt(13.616 / 9), rel=1e-12)
    assert got["t_stat"] == pytest.approx(4.0621, abs=1e-4)
    assert got["p"] == pytest.approx(0.002833, abs=1e-6)
    assert got["ci_low"] == pytest.approx(0.7001142, abs=1e-6) and got["ci_high"] == pytest.approx(2.4598858, abs=1e-6)
    # mdd_80 = lambda_80 se, lambda_80 the noncentrality at which the test with 9 dof has power 0.8
    assert got["mdd_80"] == pytest.approx(detectable_noncentrality(9) * got["sd"] / math.sqrt(10), rel=1e-12)


def test_noncentral_power_without_a_difference_is_the_two_sided_p():
    # lambda = 0: the central t, whose two-sided tail the incomplete beta function gives independently
    for dof in (1, 2, 4, 9, 30):
        for t in (0.5, 2.0, t_quantile(1 - ALPHA / 2, dof)):
            assert noncentral_t_power(0.0, dof, t) == pytest.approx(t_two_sided_p(t, dof), rel=1e-8)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_detectable_noncentrality_has_the_power_by_monte_carlo(k):
    # T = (Z + lambda) / sqrt(V / dof) with Z normal and V chi-square: rejection rate of |T| > t_crit
    dof, draws = k - 1, 400_000
    rng = np.random.default_rng(0)
    z, v = rng.standard_normal(draws), rng.chisquare(dof, draws)
    t_crit = t_quantile(1 - ALPHA / 2, dof)
    se = math.sqrt(POWER * (1 - POWER) / draws)

    def rate(ncp: float) -> float:
        return float(np.mean(np.abs((z + ncp) / np.sqrt(v / dof)) > t_crit))

    assert rate(detectable_noncentrality(dof)) == pytest.approx(POWER, abs=4 * se)
    if k == 2:  # the central-t shortcut t_{1-alpha/2} + t_{power} falls short of the power at k = 2
        assert rate(t_crit + t_quantile(POWER, dof)) < POWER - 10 * se


def test_detectable_noncentrality_reaches_the_normal_limit():
    # dof -> inf: power Phi(lambda - z) + Phi(-lambda - z) with z the normal quantile; solve it here
    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    z = t_quantile(1 - ALPHA / 2, 10**7)
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if phi(mid - z) + phi(-mid - z) < POWER else (lo, mid)
    assert detectable_noncentrality(20_000) == pytest.approx(lo, rel=2e-4)


def test_minimum_detectable_difference():
    for k in (2, 3, 5, 10):
        assert mdd(0.1, k) == pytest.approx(detectable_noncentrality(k - 1) * 0.1 / math.sqrt(k), rel=1e-12)
    shortcut = (t_quantile(1 - ALPHA / 2, 1) + t_quantile(POWER, 1)) * 0.1 / math.sqrt(2)
    assert mdd(0.1, 2) > 1.1 * shortcut  # the central-t shortcut understates it at 2 seeds
    with pytest.raises(ValueError, match="k \\(common seeds\\) must be an integer >= 2, got 1"):
        mdd(1.0, 1)
    with pytest.raises(ValueError, match="power must be in"):
        detectable_noncentrality(3, power=0.01)


def test_adjust_pairs_counts_only_tested_pairs():
    tested = {"p": 0.01, "ci_low": -0.3, "ci_high": -0.1}
    loose = {"p": 0.04, "ci_low": -0.2, "ci_high": -0.001}
    untested = {"p": None, "ci_low": None, "ci_high": None}
    a, b, c = adjust_pairs([tested, untested, loose])
    assert a["p_holm"] == pytest.approx(0.02) and a["resolved"] and a["verdict"] == "resolved"
    assert c["p_holm"] == pytest.approx(0.04) and c["resolved"]  # 2 x 0.01 < 1 x 0.04: monotone max
    assert b["p_holm"] is None and not b["resolved"] and b["verdict"].startswith("no test")
    (d,) = adjust_pairs([{**loose, "p": 0.06}])
    assert d["in_family"]
    # a family of one: Holm is the identity on it; the pair outside keeps p and gets no verdict
    inside, outside = adjust_pairs([loose, tested], family=[True, False])
    assert inside["p_holm"] == pytest.approx(0.04) and inside["resolved"]
    assert outside["p_holm"] is None and not outside["resolved"] and not outside["in_family"]
    assert outside["verdict"] == "outside the family: uncorrected p, no verdict"
    with pytest.raises(ValueError, match="family marks 1 pairs, there are 2"):
        adjust_pairs([loose, tested], family=[True])
    # its uncorrected interval [-0.2, -0.001] excludes 0, its Holm p does not reach 0.05: the verdict says so
    assert not d["resolved"] and d["verdict"] == (
        "not resolved: the uncorrected interval excludes 0, the Holm-adjusted p (0.06) is not below 0.05")
    (e,) = adjust_pairs([{"p": 0.3, "ci_low": -0.2, "ci_high": 0.1}])
    assert e["verdict"] == "not detected (the interval excludes differences larger than 0.2000)"


def test_paired_difference_too_few_seeds_and_mean_std():
    one = paired_difference({0: 1.0}, {0: 0.25})
    assert one["mean"] == 0.75 and one["ci_low"] is None and one["p"] is None and one["mdd_80"] is None
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
