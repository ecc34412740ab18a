"""The statistics core's promises, checked by simulation: a nominal 95 % interval covers at
least 93 % at 3, 5 and 10 seeds, for normal and heavy-tailed noise, including when the best
LR is picked among several nearly equal ones; equivalence is rarely declared when false."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lora_lab.stats import (
    Estimate,
    best_combination,
    best_gap,
    optimum_location,
    optimum_ratio,
    optimum_set,
    seeds_for_margin,
    t_interval,
    t_quantile,
    verdict,
)

REPS = 800


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 29, 1000, math.inf])
def test_t_quantiles_are_scipy_stats_own(df):
    """The statistics core reads t quantiles from scipy.special (a lighter import than
    scipy.stats); they are the very numbers scipy.stats.t.ppf gives."""
    from scipy import stats

    for p in (0.025, 0.05, 0.5, 0.9, 0.95, 0.975, 0.995):
        assert t_quantile(p, df) == float(stats.t.ppf(p, df))
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)  # the textbook table


# true seed-mean losses per LR of the two sides of a contrast (noise sd 1 per run)
SCENARIOS = {
    "one LR each": ([0.0], [0.0]),
    "five tied LRs": ([0.0] * 5, [0.0]),
    "near ties both sides": ([0.0, 0.05, 0.1], [0.1, 0.0, 0.05]),
    "a clear U-curve": ([0.8, 0.0, 0.4, 1.6], [0.0, 0.3]),
}


def _noise(rng: np.random.Generator, shape: tuple, kind: str) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape)
    return rng.standard_t(3, shape) / math.sqrt(3)  # heavy tails, unit variance


def _draw(rng, n, kind, mu_a, mu_b):
    seed_effect = _noise(rng, (n, 1), kind)  # shared by every run of a seed (paired)
    a = np.array(mu_a) + seed_effect + _noise(rng, (n, len(mu_a)), kind)
    b = np.array(mu_b) + seed_effect + _noise(rng, (n, len(mu_b)), kind)
    return a, b


@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_best_lr_gap_intervals_cover_95_percent(scenario, n, kind):
    mu_a, mu_b = SCENARIOS[scenario]
    truth = min(mu_a) - min(mu_b)
    rng = np.random.default_rng(n * 7 + len(scenario))
    hits = 0
    for _ in range(REPS):
        e = best_gap(*_draw(rng, n, kind, mu_a, mu_b))
        hits += e.lo <= truth <= e.hi
    assert hits / REPS >= 0.93, f"{scenario}, {n} seeds, {kind}: covered {hits / REPS:.3f}"


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("scenario", ["one LR each", "near ties both sides", "a clear U-curve"])
def test_a_change_of_gap_between_designs_covers_95_percent(scenario, n):
    """Four conditions (a gap before and after a design change), seeds paired across all."""
    mu_a, mu_b = SCENARIOS[scenario]
    mats_mu = [mu_a, mu_b, mu_b, mu_a[::-1]]
    truth = min(mu_a) - min(mu_b) - (min(mu_b) - min(mu_a))
    rng = np.random.default_rng(n + 11 * len(scenario))
    hits = 0
    for _ in range(REPS // 2):
        seed_effect = rng.standard_normal((n, 1))
        mats = [np.array(mu) + seed_effect + rng.standard_normal((n, len(mu))) for mu in mats_mu]
        e = best_combination(mats, [1, -1, -1, 1])
        hits += e.lo <= truth <= e.hi
    assert hits / (REPS // 2) >= 0.93, f"{scenario}, {n} seeds: {hits / (REPS // 2):.3f}"


def test_best_gap_is_the_two_condition_combination():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    assert best_gap(a, b) == best_combination([a, b], [1, -1])
    with pytest.raises(ValueError, match="paired seeds"):
        best_combination([a, b[:3]], [1, -1])
    with pytest.raises(ValueError, match="weights"):
        best_combination([a, b], [1])


def test_a_three_seed_percentile_bootstrap_would_fail_this_test():
    """The method this core replaced: resample 3 seeds, take the 2.5/97.5 percentiles."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(REPS):
        d = rng.standard_normal(3)
        boots = d[rng.integers(0, 3, (300, 3))].mean(1)
        hits += np.percentile(boots, 2.5) <= 0 <= np.percentile(boots, 97.5)
    assert hits / REPS < 0.85
    hits_t = sum(
        (e := t_interval(rng.standard_normal(3))).lo <= 0 <= e.hi for _ in range(REPS)
    )  # fmt: skip
    assert hits_t / REPS >= 0.93


U_CURVES = {
    "a clear U": [2, 1, 0.4, 0.1, 0, 0.1, 0.4, 1, 2],
    "a flat bottom": [0.3, 0.1, 0.02, 0, 0.02, 0.1, 0.3],
    "three tied at the bottom": [0.2, 0.05, 0, 0, 0, 0.05, 0.2],
}


@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("curve", list(U_CURVES))
def test_optimum_sets_hold_the_true_best_lr(curve, n, kind):
    """The location set (a run of grid points around the observed best) holds a true best
    grid point at least 95 % of the time; seeds share an effect across LRs, as in sweeps."""
    mu = np.array(U_CURVES[curve])
    best = np.nonzero(mu == mu.min())[0]
    rng = np.random.default_rng(n + 10 * len(curve))
    hits = 0
    for _ in range(REPS):
        loss = mu + _noise(rng, (n, 1), kind) + 0.3 * _noise(rng, (n, len(mu)), kind)
        idx = np.nonzero(optimum_set(loss))[0]
        hits += bool(((best >= idx.min()) & (best <= idx.max())).any())
    assert hits / REPS >= 0.95, f"{curve}, {n} seeds, {kind}: {hits / REPS:.3f}"


def test_equivalence_is_rarely_declared_at_the_margin():
    """TOST at 5 %: with the true difference exactly at the margin, "equivalent" <= 5 %."""
    rng = np.random.default_rng(3)
    wrong = 0
    for _ in range(REPS):
        d = 0.5 + rng.standard_normal(8)  # true difference 0.5 = the margin
        wrong += verdict(t_interval(d), margin=0.5).kind == "equivalent"
    assert wrong / REPS <= 0.06


def test_verdicts_read_the_interval_and_always_show_it():
    def est(lo, hi, eq_lo=None, eq_hi=None):
        return Estimate((lo + hi) / 2, lo, hi, 8, "paired t", eq_lo=eq_lo if eq_lo is not None
                        else lo, eq_hi=eq_hi if eq_hi is not None else hi)  # fmt: skip

    assert verdict(est(0.01, 0.05), subject="LoRA").word == "LoRA worse"
    assert verdict(est(-0.05, -0.01), subject="LoRA").word == "LoRA better"
    assert verdict(est(0.01, 0.05), subject="LoRA", lower_is_better=False).word == "LoRA better"
    eq = verdict(est(-0.03, 0.02, -0.02, 0.015), margin=0.025)
    assert eq.kind == "equivalent" and "±0.025" in eq.text and "90 %" in eq.text
    nr = verdict(est(-0.09, 0.06), margin=0.025)
    assert nr.kind == "not resolved" and "[-0.09, +0.06]" in nr.text and "±0.025" in nr.text
    for v in (eq, nr, verdict(est(0.01, 0.05))):
        assert "same" not in v.text and "%" in v.text
    with pytest.raises(ValueError, match="margin"):
        verdict(est(0, 1), margin=0)


def test_unbounded_and_missing_cases():
    assert not t_interval(np.array([1.0])).resolved
    assert not t_interval(np.array([1.0, math.inf, 2.0])).resolved  # a diverged seed
    assert t_interval(np.array([1.0, math.nan, 2.0, 3.0])).n == 3  # a missing run is dropped
    assert verdict(t_interval(np.array([1.0]))).kind == "not resolved"
    with pytest.raises(ValueError, match="paired"):
        best_gap(np.zeros((3, 2)), np.zeros((4, 2)))


def test_optimum_location_is_unbounded_at_an_edge_and_ratios_carry_both_sets():
    lrs = np.array([1e-3, 2e-3, 4e-3])
    rng = np.random.default_rng(0)
    # the set holds the grid's best; the interval is for the optimum between grid points
    falling = np.array([2.0, 1.0, 0.0]) + 0.01 * rng.standard_normal((5, 3))
    edge = optimum_location(lrs, falling)
    assert edge.hi == math.inf and edge.value == 4e-3
    u = np.array([1.0, 0.0, 1.0]) + 0.01 * rng.standard_normal((5, 3))
    inside = optimum_location(lrs, u)
    assert (inside.lo, inside.hi) == (1e-3, 4e-3)  # clear: between the best's neighbours
    assert inside.lo < inside.value < inside.hi
    ratio = optimum_ratio(lrs * 4, u, lrs, u)
    assert ratio.lo == pytest.approx(1) and ratio.hi == pytest.approx(16)
    assert ratio.value == pytest.approx(4)
    assert optimum_ratio(lrs, falling, lrs, u).hi == math.inf


def test_seeds_for_margin_matches_the_rule_of_thumb():
    # statistics notes: sd 0.03, margin 0.02 -> about a dozen seeds (90 % interval)
    assert 6 <= seeds_for_margin(0.03, 0.02) <= 12
