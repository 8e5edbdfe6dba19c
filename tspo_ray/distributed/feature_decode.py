"""The decode stage of the Ray Data feature pipeline: one video in, rows of at most `chunk` uint8 frames out.

Kept free of torch (numpy, PyAV and decord only), so a decode actor starts without importing it: on a 2-core machine
that import is CPU the encoder actors' start-up would otherwise share.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class DecodeSpec:
    """The fields of features.StoreSpec that choose and size a video's candidate frames."""

    fps: float
    max_candidates: int | None
    min_candidates: int | None
    frame_size: int | None

    @classmethod
    def of(cls, feature_spec) -> "DecodeSpec":
        fields = asdict(feature_spec)
        return cls(fields["fps"], fields["max_candidates"], fields["min_candidates"], fields["frame_size"])


def pipeline_row(path: str, key: str, chunk: int, last: bool, frames: np.ndarray, indices, times,
                 duration_s: float, reason: str = "") -> dict[str, np.ndarray]:
    """One pipeline row as a numpy batch of one (Ray Data's batch format); `reason` is non-empty for a failure."""
    return {"video": np.array([path]), "key": np.array([key]), "chunk": np.array([chunk]), "last": np.array([last]),
            "frames": frames[None], "frame_indices": np.asarray(indices, np.int64)[None],
            "timestamps_s": np.asarray(times, np.float64)[None], "duration_s": np.array([duration_s]),
            "reason": np.array([reason])}


def decode_rows(path: str, key: str, spec: DecodeSpec, chunk: int = 256) -> Iterator[dict[str, np.ndarray]]:
    """A video's candidate frames (those features.extract_local encodes) as rows of at most `chunk` frames, in
    order, the last flagged; a video that fails, before or part-way, ends with a row carrying the decoder's reason
    and no frames (chunk -1)."""
    from tspo_ray.video import frames as video_io

    side = spec.frame_size or 1
    done = 0
    try:
        cands = video_io.candidates(path, spec.fps, spec.max_candidates, spec.min_candidates)
        n = len(cands.frame_indices)
        for i, frames in enumerate(video_io.iter_frames(path, cands.frame_indices, spec.frame_size, chunk=chunk)):
            part = slice(done, done + len(frames))
            done += len(frames)
            yield pipeline_row(path, key, i, done == n, frames, cands.frame_indices[part], cands.timestamps_s[part],
                               cands.info.duration_s)
    except Exception as exc:  # quarantine any failure of one video (with the decoder's reason); the pipeline goes on
        yield pipeline_row(path, key, -1, True, np.zeros((0, side, side, 3), np.uint8), [], [], 0.0,
                           str(exc) or type(exc).__name__)


class DecodeChunks:
    """Ray Data callable class (CPU): one video per input row -> its chunk rows (see decode_rows)."""

    def __init__(self, spec: DecodeSpec, chunk: int = 256):
        self.spec, self.chunk = spec, chunk

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for path, key in zip(batch["video"], batch["key"]):
            yield from decode_rows(str(path), str(key), self.spec, self.chunk)
