"""Decoding chosen frames of long videos with PyAV: one sequential pass, converting only the frames kept.

A 1-fps grid keeps one frame in ~30, spread over the whole file, so seeking gains nothing (every GOP is decoded
either way) while decoding in order never rewinds. What costs time besides decoding is turning frames into RGB
arrays: only kept frames are converted (and resized while converting), into an output array allocated once, so
memory is bounded by the output, not by the file.

The fast mode decodes keyframes only (the codec skips everything else) and answers each requested frame with the
nearest keyframe, reporting how far that is in time.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from tspo_ray.video.info import VideoError, VideoInfo


@dataclass(frozen=True)
class DecodedFrames:
    """Frames for requested native frame indices, with the presentation times of the frames actually returned."""

    frames: np.ndarray  # uint8 [N, H, W, 3]
    timestamps_s: np.ndarray  # float64 [N]
    requested_s: np.ndarray  # float64 [N]: the requested index / native fps

    @property
    def max_time_error_s(self) -> float:
        return float(np.max(np.abs(self.timestamps_s - self.requested_s))) if len(self.frames) else 0.0


def check_video_file(path: str) -> None:
    """Errors a decoder would report obscurely, named here: missing, a folder, empty, unreadable."""
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"{path}: is a directory, not a video")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: not readable (permission denied)")


def _open(path):
    """A PyAV container of `path` opened through tspo_ray.video.source (one plain file, allowed demuxers only)."""
    from tspo_ray.video.source import video_location

    name = str(path)
    check_video_file(name)
    with video_location(path) as location:
        return open_video_container(name, location)


def open_video_container(name: str, location: str):
    """The container at `location` (from tspo_ray.video.source.video_location), refused without a video stream."""
    import av

    from tspo_ray.video.source import ffmpeg_options, refusal

    with ffmpeg_messages() as messages:
        try:
            container = av.open(location, options=ffmpeg_options(location))
        except Exception as exc:  # av.error.InvalidDataError and friends
            refused = refusal(name, [str(m[2]) for m in messages if len(m) >= 3])
            if refused:
                raise VideoError(refused) from None
            raise VideoError(f"{name}: cannot decode (not a readable video container: "
                             f"{_reason(exc, messages)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: the file has no video stream")
    return container


# What FFmpeg's terse errors mean for the person holding the file.
_HINTS = {
    "moov atom not found": "the MP4 index is missing: the file is incomplete or was never finalised",
    "partial file": "the file ends early: it was cut short",
    "Invalid NAL unit size": "the H.264 stream is damaged",
    "error while decoding MB": "the picture data is damaged",
    "could not find codec parameters": "the stream's codec parameters are unreadable",
}
_LOG_LEVEL_LOCK = threading.Lock()
_captures = 0  # ffmpeg_messages blocks active in any thread
_enabled_here = False  # whether the log level was switched on by them (a level the caller set is left alone)


@contextlib.contextmanager
def ffmpeg_messages():
    """Collect FFmpeg's own error lines (e.g. "moov atom not found") while decoding in this thread: PyAV's exceptions
    only say "Invalid data found when processing input", and FFmpeg logging is off by default.

    PyAV's log callback is switched on only while some block is active and off again after the last one: with it on,
    freeing a frame-threaded decoder (which holds the GIL) can wait forever on a codec thread that is waiting for the
    GIL to log (PyAV issue 909)."""
    import av.logging

    global _captures, _enabled_here
    with _LOG_LEVEL_LOCK:
        if _captures == 0 and av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
            av.logging.set_skip_repeated(False)  # the same failure in the next file must be reported too
            _enabled_here = True
        _captures += 1
    try:
        with av.logging.Capture(local=True) as logs:
            yield logs
    finally:
        with _LOG_LEVEL_LOCK:
            _captures -= 1
            if _captures == 0 and _enabled_here:
                av.logging.set_level(None)
                _enabled_here = False


def _reason(exc: Exception, messages=()) -> str:
    """The most specific reason available: FFmpeg's last error line (with a hint), else the exception's text."""
    lines = [str(m[2]).strip() for m in messages if len(m) >= 3 and str(m[2]).strip()]
    if lines:
        last = lines[-1][:200]
        hint = next((h for key, h in _HINTS.items() if key in last), None)
        return f"{last} ({hint})" if hint else last
    text = getattr(exc, "strerror", None) or (str(exc).splitlines()[0][:200] if str(exc) else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _rate(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and math.isfinite(float(rate)) and float(rate) > 0:
            return float(rate)
    return 1.0  # a container without a usable rate is read as 1 fps


def probe(path: str | Path) -> VideoInfo:
    """Frame count and frame rate; the count comes from the container's index, or from demuxing when it has none."""
    container, path = _open(path), str(path)
    try:
        stream = container.streams.video[0]
        count = int(stream.frames or 0)
        if count <= 0:  # e.g. Matroska/WebM: count the video packets (no decoding)
            count = sum(1 for packet in container.demux(stream) if packet.size)
        fps = _rate(stream)
    except Exception as exc:
        raise VideoError(f"{path}: cannot read the stream ({_reason(exc)})") from None
    finally:
        container.close()
    if count <= 0:
        raise VideoError(f"{path}: the video has no frames")
    return VideoInfo(path, count, fps)


def _decoded(container, stream, path: str):
    """Frames in presentation order; a decoding error becomes a VideoError naming the file and FFmpeg's reason."""
    with ffmpeg_messages() as messages:
        try:
            yield from container.decode(stream)
        except Exception as exc:
            raise VideoError(f"{path}: decoding failed ({_reason(exc, messages)})") from None


def _convert(frame, size: int | None, reformatter=None) -> np.ndarray:
    """RGB array of a frame. A reformatter shared across a pass keeps one scaler context: a frame's own to_ndarray
    builds a new one per frame, which cost several times the decoding of a small video (same pixels either way)."""
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()
    if size:  # BICUBIC as decord (FFmpeg's scale default)
        return reformatter.reformat(frame, width=size, height=size, format="rgb24", interpolation="BICUBIC").to_ndarray()
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


def decode_sequential(path: str | Path, frame_indices, size: int | None = None, threads: int = 0) -> DecodedFrames:
    """Exact frames for native frame indices (any order, repeats allowed) in one pass over the file.

    size: resize to size x size while converting. threads: codec threads (0: FFmpeg picks).
    """
    source, path = path, str(path)
    wanted = _requested(path, frame_indices)
    order = np.argsort(wanted, kind="stable")
    frames, times = None, np.zeros(len(wanted))
    with _video_stream(source, threads) as (container, stream):
        fps = _rate(stream)
        for slot, rgb, time in _kept_frames(path, container, stream, wanted[order], size):
            if frames is None:
                frames = np.empty((len(wanted), *rgb.shape), np.uint8)
            frames[order[slot]], times[order[slot]] = rgb, time
    return DecodedFrames(frames, times, wanted / fps)


#: pixels a chunk of iter_sequential may hold: 256 frames of 224 px are 38 MB, but 256 frames of a 4K video would be
#: 6.4 GB, so a chunk ends at this many bytes too (a chunk holds at least one frame)
CHUNK_BYTES = 256 * 2**20
#: the largest frame decoded (8192 x 8192): beyond it a header is more likely forged than a real video
MAX_FRAME_PIXELS = 8192 * 8192


def iter_sequential(path: str | Path, frame_indices, size: int | None = None, threads: int = 0,
                    chunk: int = 256, max_chunk_bytes: int | None = None) -> Iterator[DecodedFrames]:
    """decode_sequential for sorted indices, handed back `chunk` frames at a time from the same single pass: memory
    holds one chunk, not every candidate of an hour-long video (16k frames of 720p would be 44 GB). A chunk also ends
    at max_chunk_bytes of pixels (default CHUNK_BYTES), so a chunk of full-size 4K frames is not 6 GB."""
    source, path = path, str(path)
    budget = CHUNK_BYTES if max_chunk_bytes is None else int(max_chunk_bytes)
    wanted = _requested(path, frame_indices)
    if np.any(np.diff(wanted) < 0):
        raise ValueError("iter_sequential needs frame indices in increasing order")
    with _video_stream(source, threads) as (container, stream):
        fps = _rate(stream)
        frames, times, first, held = [], [], 0, 0
        for slot, rgb, time in _kept_frames(path, container, stream, wanted, size):
            frames.append(rgb)
            times.append(time)
            held += rgb.nbytes
            if len(frames) == chunk or held + rgb.nbytes > budget or slot == len(wanted) - 1:
                yield DecodedFrames(np.stack(frames), np.asarray(times), wanted[first : slot + 1] / fps)
                frames, times, first, held = [], [], slot + 1, 0


def _requested(path: str, frame_indices) -> np.ndarray:
    wanted = np.asarray([int(i) for i in frame_indices], dtype=np.int64)
    if wanted.size == 0:
        raise VideoError(f"{path}: no frame indices requested")
    if wanted.min() < 0:
        raise VideoError(f"{path}: negative frame indices requested: {wanted[wanted < 0][:5].tolist()}")
    return wanted


@contextlib.contextmanager
def _video_stream(path, threads: int):
    container, stream = _open(path), None
    try:
        stream = container.streams.video[0]
        _check_frame_size(str(path), stream)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        yield container, stream
    finally:
        try:  # drain the frames still in the codec threads, so that none is mid-frame when the decoder is freed
            if stream is not None:
                stream.codec_context.decode(None)
        except Exception:  # a decoder that failed, or has nothing left
            pass
        container.close()


def _check_frame_size(path: str, stream) -> None:
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(f"{path}: frames of {width}x{height} are larger than the {MAX_FRAME_PIXELS} pixels decoded")


def _kept_frames(path: str, container, stream, wanted_sorted: np.ndarray, size: int | None):
    """(position in wanted_sorted, RGB frame, time) for every requested frame, decoding in order and converting only
    the frames kept; a VideoError naming the first missing frame when the stream ends early."""
    from av.video.reformatter import VideoReformatter

    fps, start, reformatter = _rate(stream), _start_s(stream), VideoReformatter()
    slot, index = 0, -1
    for index, frame in enumerate(_decoded(container, stream, path)):
        if index < wanted_sorted[slot]:
            continue  # decoded (the next frames depend on it) but never converted
        rgb, time = _convert(frame, size, reformatter), _frame_time(frame, index, fps) - start
        while slot < len(wanted_sorted) and wanted_sorted[slot] == index:
            yield slot, rgb, time
            slot += 1
        if slot == len(wanted_sorted):
            return
    missing = wanted_sorted[slot:]
    raise VideoError(f"{path}: truncated or corrupt: the stream ends after {index + 1} decodable frames, "
                     f"frame {int(missing[0])} was requested ({len(missing)} requested frames missing)")


def _frame_time(frame, index: int, fps: float) -> float:
    return float(frame.time) if frame.time is not None else index / fps


def _start_s(stream) -> float:
    """The stream's first presentation time: frame times are reported relative to it."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def decode_keyframes_nearest(path: str | Path, frame_indices, size: int | None = None, threads: int = 0) -> DecodedFrames:
    """The fast mode: for each requested index, the keyframe nearest to it in time (repeats when keyframes are
    sparser than the request). Only keyframes are decoded and only chosen ones converted, straight into the output;
    DecodedFrames.max_time_error_s says how far off in time the answer is."""
    source, path = path, str(path)
    wanted = np.asarray([int(i) for i in frame_indices], dtype=np.int64)
    if wanted.size == 0:
        raise VideoError(f"{path}: no frame indices requested")
    container, stream = _open(source), None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        stream.codec_context.skip_frame = "NONKEY"
        fps, start = _rate(stream), _start_s(stream)
        requested = wanted / fps
        order = np.argsort(requested, kind="stable")
        out = _NearestKeyframes(len(wanted), size)
        slot, prev = 0, None
        for k, frame in enumerate(_decoded(container, stream, path)):
            cur = out.keyframe(k, frame, _frame_time(frame, 0, fps) - start)
            while slot < len(order) and requested[order[slot]] <= cur.time:
                at = requested[order[slot]]
                out.assign(order[slot], prev if prev and at - prev.time <= cur.time - at else cur)
                slot += 1
            prev = cur
        for i in order[slot:]:  # requests after the last keyframe
            out.assign(i, prev)
    finally:
        container.close()
    if prev is None:
        raise VideoError(f"{path}: no decodable keyframe")
    return DecodedFrames(out.frames, out.times, requested)


class _NearestKeyframes:
    """The fast mode's output: keyframes converted at most once, and only when some request chose them."""

    class Key:
        def __init__(self, frame, time: float, size):
            self.frame, self.time, self.size, self.rgb = frame, time, size, None

        def array(self) -> np.ndarray:
            if self.rgb is None:
                self.rgb, self.frame = _convert(self.frame, self.size), None
            return self.rgb

    def __init__(self, count: int, size: int | None):
        self.count, self.size = count, size
        self.frames, self.times = None, np.zeros(count)

    def keyframe(self, ordinal: int, frame, time: float) -> "Key":
        return self.Key(frame, time, self.size)

    def assign(self, i: int, key: "Key") -> None:
        rgb = key.array()
        if self.frames is None:
            self.frames = np.empty((self.count, *rgb.shape), np.uint8)
        self.frames[i], self.times[i] = rgb, key.time
