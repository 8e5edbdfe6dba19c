"""Spread and confidence intervals for accuracy tables: pure NumPy, no Ray, no torch.

An accuracy measured for several training seeds on the same questions has two sources of noise: which seed trained
the agent and which questions were asked. `hierarchical_bootstrap_ci` resamples both (seeds, then questions within
each drawn seed); with one seed (a training-free selector) it is the ordinary percentile bootstrap over questions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def hierarchical_bootstrap_ci(correct_by_seed: Sequence[Sequence[float]], level: float = 0.95, draws: int = 2000,
                              seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean accuracy: each draw resamples the seeds with replacement, then each drawn seed's
    questions with replacement, and averages. correct_by_seed[s][q] is 1.0/0.0 (question q under seed s)."""
    rows = [np.asarray(r, dtype=float) for r in correct_by_seed]
    if not rows or any(r.size == 0 for r in rows):
        raise ValueError("every seed needs at least one question")
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for d in range(draws):
        picked = rng.integers(0, len(rows), size=len(rows))
        means[d] = np.mean([rows[s][rng.integers(0, rows[s].size, size=rows[s].size)].mean() for s in picked])
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]
