"""Fixed frame sets for measuring an answerer apart from any selector: gold, uniform and random.

- gold: up to k native frames spread evenly over the frames inside the record's target spans (pooled, so longer
  spans get more frames; relation questions get both spans, counting questions every occurrence);
- uniform: k of the T_c 1-fps candidates, the centres of k equal bins (the uniform baseline of
  tspo_ray.method.selection_methods);
- random: k candidates drawn without replacement, seeded by the record id.
Target spans are read here, by the measurement; the answerer only receives the resulting frames.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.data.records import QARecord
from tspo_ray.method.selection_methods import spread
from tspo_ray.video import frames as video

METHODS = ("gold", "uniform", "random")


def gold_indices(spans, num_frames: int, native_fps: float, k: int) -> np.ndarray:
    """At most k native frame indices inside the spans: the centre frame of every span first (a question needs
    each of its events seen, a short needle too), then the rest spread evenly over the frames inside any span.
    Pure."""
    times = np.arange(num_frames) / native_fps
    per_span = [np.flatnonzero((times >= start) & (times <= end)) for start, end in spans]
    per_span = [idx for idx in per_span if len(idx)]
    centres = [int(idx[len(idx) // 2]) for idx in per_span]
    if len(centres) >= k:
        return np.array(sorted(centres[i] for i in spread(len(centres), k)), dtype=np.int64)
    pooled = np.unique(np.concatenate(per_span)) if per_span else np.array([], dtype=np.int64)
    picked = set(centres)
    rest = [int(i) for i in pooled[spread(len(pooled), k)] if int(i) not in picked]
    return np.array(sorted(picked | set(rest[: k - len(picked)])), dtype=np.int64)


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")


def frame_set(record: QARecord, video_path: str | Path, method: str, k: int = 8, fps: float = 1.0,
              max_candidates: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(native frame indices, timestamps_s) of one fixed frame set, in temporal order."""
    if method == "gold":
        info = video.probe(video_path)
        idx = gold_indices(record.target_spans, info.num_frames, info.native_fps, k)
        if not len(idx):
            raise ValueError(f"record {record.id}: no frame of {video_path} lies inside its target spans")
        return idx, idx / info.native_fps
    cands = video.candidates(video_path, fps, max_candidates)
    n = len(cands.frame_indices)
    if method == "uniform":
        pick = spread(n, k)
    elif method == "random":
        pick = np.sort(np.random.default_rng(_seed(record.id)).choice(n, size=min(k, n), replace=False))
    else:
        raise ValueError(f"unknown frame-set method {method!r}; choose one of {METHODS}")
    return cands.frame_indices[pick], cands.timestamps_s[pick]


def request_for(record: QARecord, video_path: str | Path, method: str, k: int = 8) -> AnswerRequest:
    """The AnswerRequest an answerer gets for this record under a fixed frame set (no answer, no spans)."""
    idx, ts = frame_set(record, video_path, method, k)
    return AnswerRequest.for_record(record, video_path, idx, ts, method)
