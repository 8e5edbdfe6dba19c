"""The difficulty filter's single-process pieces: which frames each question is asked over, and the decision rule.

TSPO-10K keeps questions a frozen answerer gets wrong from a few uniform frames but right from many: the ones a
keyframe selector can make a difference on. Each question is answered from `easy_frames` (4) and `hard_frames`
(64) frames spread uniformly over its candidates (the training grid); an item answerable from the few is
"too_easy", one unanswerable from the many is "too_hard", and the rest are kept. No Ray and no model here; the
answerer's side (requests, judging answers) is in tspo_ray.distributed.difficulty_filter.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from tspo_ray.method.selection_methods import spread

REASONS = ("kept", "too_easy", "too_hard", "failed")


def decide(easy_correct: bool | None, hard_correct: bool | None) -> str:
    """"too_easy" when the few frames answer it, else "too_hard" when the many do not, else "kept"; "failed"
    when either answer could not be had (None: a video or request the answerer could not use). Pure."""
    if easy_correct is None or hard_correct is None:
        return "failed"
    if easy_correct:
        return "too_easy"
    if not hard_correct:
        return "too_hard"
    return "kept"


def uniform_sets(candidate_indices: Sequence[int], candidate_times: Sequence[float], easy_frames: int,
                 hard_frames: int) -> dict[str, tuple[list[int], list[float]]]:
    """{"easy": (native indices, timestamps), "hard": ...}: k candidates at the centres of k equal bins. Pure."""
    idx, ts = np.asarray(candidate_indices), np.asarray(candidate_times, dtype=np.float64)
    out = {}
    for name, k in (("easy", easy_frames), ("hard", hard_frames)):
        pick = spread(len(idx), k)
        out[name] = ([int(i) for i in idx[pick]], [float(t) for t in ts[pick]])
    return out


def counts(reasons: Iterable[str]) -> dict[str, int]:
    """{reason: number of questions} over REASONS (zeros included), plus "total"."""
    c = Counter(reasons)
    unknown = set(c) - set(REASONS)
    if unknown:
        raise ValueError(f"unknown reasons {sorted(unknown)}; known: {REASONS}")
    return {reason: c.get(reason, 0) for reason in REASONS} | {"total": sum(c.values())}
