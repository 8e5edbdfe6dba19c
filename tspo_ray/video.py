"""Candidate frames of a video: a target fps, a cap of T_c candidates, real timestamps, decoded by one of two back ends.

"pyav" (the default, see benchmarks/decode.py): one sequential pass that converts only the kept frames
(tspo_ray.video_decode). "decord": decord's VideoReader.get_batch. The fast mode "keyframes" decodes keyframes only and
returns the nearest keyframe for each candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BACKENDS = ("pyav", "decord")
DEFAULT_BACKEND = "pyav"  # measured: benchmarks/decode.py


class VideoError(RuntimeError):
    """A video that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int
    native_fps: float

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.native_fps


@dataclass(frozen=True)
class Candidates:
    """T candidate frames of a video: indices into the native frame sequence and their times."""

    frame_indices: np.ndarray  # int64 [T]
    timestamps_s: np.ndarray  # float64 [T]
    info: VideoInfo


def _open(path: str | Path, size: int | None = None):
    import decord  # local import: decord's import is slow and not every caller decodes

    from tspo_ray.video_decode import check_video_file

    path = str(path)
    check_video_file(path)
    kwargs = {"num_threads": 1}
    if size:
        kwargs.update(width=size, height=size)
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), **kwargs)
    except Exception as exc:  # decord raises DECORDError / RuntimeError with C++ text
        raise VideoError(f"{path}: cannot decode ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if len(reader) == 0:
        raise VideoError(f"{path}: the video has no frames")
    declared = _declared_frame_count(path)
    if declared > len(reader):
        raise VideoError(f"{path}: truncated: the container lists {declared} frames but only {len(reader)} are present")
    return reader


def _declared_frame_count(path: str) -> int:
    """The frame count the container's index states (0 when it states none); reads the header only."""
    import av

    try:
        with av.open(path) as container:
            return max((int(s.frames or 0) for s in container.streams.video), default=0)
    except Exception:  # an unreadable header is reported by the decoder itself
        return 0


def _backend(backend: str | None) -> str:
    backend = backend or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"unknown video back end {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def probe(path: str | Path, backend: str | None = None) -> VideoInfo:
    """Frame count and frame rate of a video (a container without a usable rate is read as 1 fps)."""
    if _backend(backend) == "pyav":
        from tspo_ray import video_decode

        return video_decode.probe(path)
    reader = _open(path)
    fps = float(reader.get_avg_fps())
    return VideoInfo(str(path), len(reader), fps if math.isfinite(fps) and fps > 0 else 1.0)


def candidate_indices(num_frames: int, native_fps: float, fps: float, max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices sampled at `fps` (one per 1/fps seconds), uniformly thinned to at most max_candidates.

    Returns (indices int64 [T], timestamps_s float64 [T]). Pure: no decoding.
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if not (math.isfinite(native_fps) and native_fps > 0):
        raise ValueError(f"native_fps must be a positive number, got {native_fps}")
    if fps <= 0 or max_candidates <= 0:
        raise ValueError("fps and max_candidates must be positive")
    duration = num_frames / native_fps
    times = np.arange(0.0, duration, 1.0 / fps)
    idx = np.minimum(np.round(times * native_fps).astype(np.int64), num_frames - 1)
    idx = np.unique(idx)
    if len(idx) > max_candidates:
        # Uniform thinning: the centres of max_candidates equal bins over the 1-fps grid.
        pick = ((np.arange(max_candidates) + 0.5) * len(idx) / max_candidates).astype(np.int64)
        idx = idx[pick]
    return idx, idx / native_fps


def candidates(path: str | Path, fps: float = 1.0, max_candidates: int = 128, backend: str | None = None) -> Candidates:
    info = probe(path, backend)
    idx, ts = candidate_indices(info.num_frames, info.native_fps, fps, max_candidates)
    return Candidates(idx, ts, info)


def read_frames(path: str | Path, frame_indices, size: int | None = None, backend: str | None = None) -> np.ndarray:
    """Decode the given native frame indices: uint8 [N, H, W, 3] (resized to size×size when given)."""
    if _backend(backend) == "pyav":
        from tspo_ray import video_decode

        info = video_decode.probe(path)
        bad = [int(i) for i in frame_indices if not 0 <= int(i) < info.num_frames]
        if bad:
            raise VideoError(f"{path}: frame indices out of range 0..{info.num_frames - 1}: {bad[:5]}")
        return video_decode.decode_sequential(path, frame_indices, size).frames
    reader = _open(path, size)
    frame_indices = [int(i) for i in frame_indices]
    bad = [i for i in frame_indices if not 0 <= i < len(reader)]
    if bad:
        raise VideoError(f"{path}: frame indices out of range 0..{len(reader) - 1}: {bad[:5]}")
    if not frame_indices:
        raise VideoError(f"{path}: no frame indices requested")
    try:
        return reader.get_batch(frame_indices).asnumpy()
    except Exception as exc:
        error = exc
    if size:
        # decord's resizing fails for some output sizes (e.g. 8, 16, 48 px from 128 px) with a buffer-size check:
        # decode at the native size and resize here instead.
        try:
            return _resize(_open(path).get_batch(frame_indices).asnumpy(), size)
        except Exception:
            pass
    raise VideoError(f"{path}: decoding failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


def decode_candidates(
    path: str | Path, fps: float = 1.0, max_candidates: int = 128, size: int | None = None,
    backend: str | None = None, mode: str = "exact",
) -> tuple[np.ndarray, Candidates]:
    """Decode the candidate frames of a video: (uint8 [T, H, W, 3], Candidates).

    mode "keyframes" (opt-in, several times faster on long videos): each candidate is the nearest keyframe, and
    Candidates.timestamps_s are the times of the frames returned (the error is the distance to the 1-fps grid).
    """
    if mode not in ("exact", "keyframes"):
        raise ValueError(f"unknown decoding mode {mode!r}; expected 'exact' or 'keyframes'")
    cands = candidates(path, fps, max_candidates, backend)
    if mode == "exact":
        return read_frames(path, cands.frame_indices, size, backend), cands
    from tspo_ray import video_decode

    decoded = video_decode.decode_keyframes_nearest(path, cands.frame_indices, size)
    shown = np.minimum(np.round(decoded.timestamps_s * cands.info.native_fps).astype(np.int64), cands.info.num_frames - 1)
    return decoded.frames, Candidates(shown, decoded.timestamps_s, cands.info)
