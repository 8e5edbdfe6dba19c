"""Candidate frames of a video: the reference's 1-fps grid (or another rate), an optional cap T_c, real timestamps,
decoded by one of two back ends.

"pyav" (the default, see benchmarks/decode.py): one sequential pass that converts only the kept frames
(tspo_ray.video.decode). "decord": decord's VideoReader.get_batch. The fast mode "keyframes" decodes keyframes only and
returns the nearest keyframe for each candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tspo_ray.video.info import VideoError, VideoInfo

BACKENDS = ("pyav", "decord")
DEFAULT_BACKEND = "pyav"  # measured: benchmarks/decode.py


@dataclass(frozen=True)
class Candidates:
    """T candidate frames of a video: indices into the native frame sequence and their times."""

    frame_indices: np.ndarray  # int64 [T]
    timestamps_s: np.ndarray  # float64 [T]
    info: VideoInfo


def _open(path: str | Path, size: int | None = None):
    import decord  # local import: decord's import is slow and not every caller decodes

    from tspo_ray.video import decode as video_decode
    from tspo_ray.video.source import video_location

    source, path = path, str(path)
    video_decode.check_video_file(path)
    kwargs = {"num_threads": 1}
    if size:
        kwargs.update(width=size, height=size)
    with video_location(source) as location:  # decord reads the file PyAV has accepted, by its descriptor
        with video_decode.open_video_container(path, location) as container:
            declared = max((int(s.frames or 0) for s in container.streams.video), default=0)
        try:
            reader = decord.VideoReader(location, ctx=decord.cpu(0), **kwargs)
        except Exception as exc:  # decord raises DECORDError / RuntimeError with C++ text
            raise VideoError(f"{path}: cannot decode ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None
    if len(reader) == 0:
        raise VideoError(f"{path}: the video has no frames")
    if declared > len(reader):
        raise VideoError(f"{path}: truncated: the container lists {declared} frames but only {len(reader)} are present")
    return reader


def _backend(backend: str | None) -> str:
    backend = backend or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"unknown video back end {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def probe(path: str | Path, backend: str | None = None) -> VideoInfo:
    """Frame count and frame rate of a video (a container without a usable rate is read as 1 fps)."""
    if _backend(backend) == "pyav":
        from tspo_ray.video import decode as video_decode

        return video_decode.probe(path)
    reader = _open(path)
    fps = float(reader.get_avg_fps())
    return VideoInfo(str(path), len(reader), fps if math.isfinite(fps) and fps > 0 else 1.0)


#: the reference's training cap T_c and the grid length below which it also re-samples to T_c frames
TRAIN_MAX_CANDIDATES = 128
TRAIN_MIN_CANDIDATES = 50
#: the longest uncapped grid accepted (8 MB of indices; 1,000 hours at 1 fps)
MAX_GRID = 3_600_000


def grid_step(native_fps: float, fps: float = 1.0) -> int:
    """Native frames between two candidates: round(native_fps / fps), at least 1.

    The reference takes every round(native_fps)-th frame for its 1-fps grid (29.97 fps -> every 30th frame).
    Python's round (half to even) is kept, so 2.5 fps -> every 2nd frame as upstream; below 0.5 fps upstream's
    step would be 0 (a crash), here every frame is a candidate.
    """
    if not (math.isfinite(native_fps) and native_fps > 0):
        raise ValueError(f"native_fps must be a positive number, got {native_fps}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return max(1, round(native_fps / fps))


def candidate_indices(num_frames: int, native_fps: float, fps: float = 1.0, max_candidates: int | None = None,
                      min_candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate frames of a video on the reference's grid: every grid_step(native_fps, fps)-th native frame.

    With max_candidates (training: 128) a grid longer than max_candidates, or shorter than min_candidates
    (training: 50), is replaced, as upstream does, by max_candidates frames spread evenly over ALL native frames:
    floor(linspace(0, num_frames - 1, max_candidates)) (indices repeat when the video has fewer frames).
    max_candidates=None keeps the whole grid (evaluation: every 1-fps frame, thousands for hour-long videos).

    Returns (indices int64 [T], timestamps_s float64 [T] = index / native_fps). Pure: no decoding.
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if max_candidates is not None and max_candidates <= 0:
        raise ValueError(f"max_candidates must be positive or None, got {max_candidates}")
    step = grid_step(native_fps, fps)
    length = -(-int(num_frames) // step)  # the grid's length, counted without building it
    if max_candidates is not None and (length > max_candidates or length < (min_candidates or 0)):
        idx = np.linspace(0, num_frames - 1, max_candidates).astype(np.int64)
    elif length > MAX_GRID:  # a frame count read from a file's header may be forged: never allocated unbounded
        raise VideoError(f"a grid of {length} candidates ({num_frames} frames at {native_fps:g} fps) is longer than "
                         f"{MAX_GRID} ({MAX_GRID / 3600:.0f} hours at 1 fps); set max_candidates")
    else:
        idx = np.arange(0, num_frames, step, dtype=np.int64)
    return idx, idx / native_fps


def candidates(path: str | Path, fps: float = 1.0, max_candidates: int | None = None,
               min_candidates: int | None = None, backend: str | None = None) -> Candidates:
    info = probe(path, backend)
    idx, ts = candidate_indices(info.num_frames, info.native_fps, fps, max_candidates, min_candidates)
    return Candidates(idx, ts, info)


def read_frames(path: str | Path, frame_indices, size: int | None = None, backend: str | None = None) -> np.ndarray:
    """Decode the given native frame indices: uint8 [N, H, W, 3] (resized to size×size when given)."""
    if _backend(backend) == "pyav":
        from tspo_ray.video import decode as video_decode

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


def iter_frames(path: str | Path, frame_indices, size: int | None = None, backend: str | None = None,
                chunk: int = 256):
    """read_frames for increasing indices, `chunk` frames at a time (PyAV: from one sequential pass), so a caller
    that encodes as it goes holds one chunk of pixels, never the whole video's."""
    from tspo_ray.video import decode as video_decode

    frame_indices = [int(i) for i in frame_indices]
    if _backend(backend) != "pyav":  # chunks of at most CHUNK_BYTES of pixels, as PyAV's pass makes them
        if size:
            frame_bytes = size * size * 3
        else:
            with video_decode._open(path) as container:
                codec = container.streams.video[0].codec_context
                frame_bytes = int(codec.width or 1) * int(codec.height or 1) * 3
        step = max(1, min(chunk, video_decode.CHUNK_BYTES // frame_bytes))
        for start in range(0, len(frame_indices), step):
            yield read_frames(path, frame_indices[start : start + step], size, backend)
        return

    info = video_decode.probe(path)
    bad = [i for i in frame_indices if not 0 <= i < info.num_frames]
    if bad:
        raise VideoError(f"{path}: frame indices out of range 0..{info.num_frames - 1}: {bad[:5]}")
    for decoded in video_decode.iter_sequential(path, frame_indices, size, chunk=chunk):
        yield decoded.frames


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


def decode_candidates(
    path: str | Path, fps: float = 1.0, max_candidates: int | None = None, size: int | None = None,
    min_candidates: int | None = None, backend: str | None = None, mode: str = "exact",
) -> tuple[np.ndarray, Candidates]:
    """Decode the candidate frames of a video: (uint8 [T, H, W, 3], Candidates); see candidate_indices.

    mode "keyframes" (opt-in, several times faster on long videos): each candidate is the nearest keyframe, and
    Candidates.timestamps_s are the times of the frames returned (the error is the distance to the 1-fps grid).
    """
    if mode not in ("exact", "keyframes"):
        raise ValueError(f"unknown decoding mode {mode!r}; expected 'exact' or 'keyframes'")
    cands = candidates(path, fps, max_candidates, min_candidates, backend)
    if mode == "exact":
        return read_frames(path, cands.frame_indices, size, backend), cands
    from tspo_ray.video import decode as video_decode

    decoded = video_decode.decode_keyframes_nearest(path, cands.frame_indices, size)
    shown = np.minimum(np.round(decoded.timestamps_s * cands.info.native_fps).astype(np.int64), cands.info.num_frames - 1)
    return decoded.frames, Candidates(shown, decoded.timestamps_s, cands.info)
