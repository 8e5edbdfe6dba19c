"""Summary numbers of a built world: question counts, answer balance, and how often uniform sampling sees the
target frames (the haystack is only hard if uniform sampling usually misses the needle). Pure functions."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from tspo_ray.method.rewards import temporal_reward
from tspo_ray.video.frames import candidate_indices


def balance(records: Sequence[dict]) -> dict:
    """Questions per family, answers per letter, and counting answers per value."""
    return {
        "families": dict(sorted(Counter(r["meta"]["family"] for r in records).items())),
        "answer_letters": dict(sorted(Counter(r["answer"] for r in records).items())),
        "count_answers": dict(sorted(Counter(r["meta"]["answer_text"] for r in records
                                             if r["meta"]["family"] == "counting").items())),
    }


def uniform_selection_times(num_frames: int, native_fps: float, k: int, fps: float = 1.0,
                            max_candidates: int = 128) -> list[float]:
    """Timestamps of k uniformly spread frames among the video's candidates (select_uniform's rule)."""
    from tspo_ray.method.selection_methods import select_uniform

    _, ts = candidate_indices(num_frames, native_fps, fps, max_candidates)
    return [float(ts[i]) for i in select_uniform(len(ts), k).tolist()]


def uniform_coverage(records: Sequence[dict], native_fps: float, k: int = 8, fps: float = 1.0,
                     max_candidates: int = 128) -> dict[str, dict[str, float]]:
    """Per family: the share of questions where uniform k-of-T_c sampling hits a target span, and the mean R_T."""
    hits: dict[str, list[float]] = {}
    r_t: dict[str, list[float]] = {}
    for r in records:
        ts = uniform_selection_times(round(r["duration_s"] * native_fps), native_fps, k, fps, max_candidates)
        reward = temporal_reward(ts, r["target_spans"])
        fam = r["meta"]["family"]
        hits.setdefault(fam, []).append(float(reward > 0))
        r_t.setdefault(fam, []).append(reward)
    return {f: {"hit_rate": round(sum(hits[f]) / len(hits[f]), 3), "mean_r_t": round(sum(r_t[f]) / len(r_t[f]), 3)}
            for f in sorted(hits)}
