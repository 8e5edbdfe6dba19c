"""Spread and bootstrap intervals, against hand-computed values and brute force."""
import itertools

import numpy as np
import pytest

from tspo_ray.evaluation.stats import hierarchical_bootstrap_ci, intervals_overlap, mean_and_spread


def test_mean_and_spread_by_hand():
    assert mean_and_spread([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2))
    assert mean_and_spread([0.4]) == (0.4, 0.0)
    with pytest.raises(ValueError):
        mean_and_spread([])


def test_constant_answers_give_a_point_interval():
    assert hierarchical_bootstrap_ci([[1.0] * 20, [1.0] * 30]) == (1.0, 1.0)
    assert hierarchical_bootstrap_ci([[0.0] * 5]) == (0.0, 0.0)


def test_one_seed_matches_the_exact_bootstrap_distribution():
    """Four questions, one right: a bootstrap mean is k/4 with Binomial(4, 1/4) weights. P(4/4) = 1/256 < 2.5% and
    P(>= 3/4) = 13/256 > 2.5%, so the 97.5% quantile is 3/4; P(0) = 81/256, so the 2.5% quantile is 0."""
    assert hierarchical_bootstrap_ci([[1.0, 0.0, 0.0, 0.0]], draws=20000) == (0.0, 0.75)


def exact_bootstrap_quantile(rows, p: float) -> float:
    """The p-quantile of the hierarchical bootstrap mean by enumeration: every draw of the seeds, then every
    resample of each drawn seed's questions, each outcome with its probability."""
    outcomes = {}
    for picked in itertools.product(range(len(rows)), repeat=len(rows)):
        resamples = [[np.mean(c) for c in itertools.product(rows[s], repeat=len(rows[s]))] for s in picked]
        weight = 1 / (len(rows) ** len(rows) * np.prod([len(r) for r in resamples]))
        for means in itertools.product(*resamples):
            value = round(float(np.mean(means)), 12)
            outcomes[value] = outcomes.get(value, 0.0) + weight
    values = sorted(outcomes)
    return values[int(np.searchsorted(np.cumsum([outcomes[v] for v in values]), p))]


def test_two_seeds_match_the_enumerated_hierarchical_distribution():
    """Seeds [1,0,0] and [1,1,1,0], every draw of the seeds and every resample of their questions: resampling the seeds as well as their questions puts
    the interval at the enumerated 2.5% and 97.5% points (0.125 and 1), wider than questions alone (0.25, 0.875)."""
    rows = [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    lo, hi = hierarchical_bootstrap_ci(rows, draws=20000)
    assert exact_bootstrap_quantile(rows, 0.02) <= lo <= exact_bootstrap_quantile(rows, 0.03)
    assert exact_bootstrap_quantile(rows, 0.97) <= hi <= exact_bootstrap_quantile(rows, 0.98)


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(0)
    same = [rng.random(400) < 0.6 for _ in range(3)]
    spread = [rng.random(400) < p for p in (0.45, 0.6, 0.75)]
    w_same = np.diff(hierarchical_bootstrap_ci(same))[0]
    w_spread = np.diff(hierarchical_bootstrap_ci(spread))[0]
    assert w_spread > 2 * w_same


def test_overlap():
    assert intervals_overlap((0.1, 0.3), (0.3, 0.5)) and not intervals_overlap((0.1, 0.29), (0.3, 0.5))
