"""A video clip of chosen frames only, each at its own time: how a selection reaches a model that takes a video file.

The clip holds exactly the k frames given, in order, with presentation times equal to their timestamps in the source
video (variable frame rate), so a reader that takes every frame of it gets the selected frames, and one that reads
times gets theirs. Written under a temporary name and renamed into place: a reader never sees half a clip.
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from tspo_ray.video import frames as video_io

#: presentation times in milliseconds
TIME_BASE = Fraction(1, 1000)


def write_selection_clip(video: str | Path, frame_indices: Sequence[int], timestamps_s: Sequence[float],
                         out: str | Path, codec: str = "mpeg4", quality: int = 2) -> Path:
    """Decode `frame_indices` of `video` at their native size and write them to `out` at `timestamps_s`, encoding
    each chunk of frames as it is decoded (tspo_ray.video.decode.CHUNK_BYTES), so a clip of 4K frames never holds
    them all in memory."""
    if len(frame_indices) != len(timestamps_s) or not len(frame_indices):
        raise ValueError(f"{video}: {len(frame_indices)} frames and {len(timestamps_s)} timestamps for a clip")
    order = np.argsort(np.asarray(timestamps_s, dtype=np.float64), kind="stable")
    indices = [int(frame_indices[i]) for i in order]
    times = [float(timestamps_s[i]) for i in order]
    if any(b < a for a, b in zip(indices, indices[1:])):  # times and frames disagree on the order: decode at once
        return write_frames_clip(video_io.read_frames(video, indices), times, out, codec, quality)
    return write_frames_clip(video_io.iter_frames(video, indices), times, out, codec, quality)


def write_frames_clip(frames, timestamps_s: Sequence[float], out: str | Path, codec: str = "mpeg4",
                      quality: int = 2) -> Path:
    """frames (uint8 [k, H, W, 3], or an iterable of such chunks, k frames in all) at strictly increasing
    timestamps_s (rounded to the millisecond) -> an mp4."""
    import av

    chunks = [frames] if isinstance(frames, np.ndarray) else frames
    pts = [round(t / float(TIME_BASE)) for t in timestamps_s]
    if any(b <= a for a, b in zip(pts, pts[1:])):
        raise ValueError(f"clip timestamps must increase by at least 1 ms, got {list(timestamps_s)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream, times = None, iter(pts)
            for chunk in chunks:
                for frame in chunk:
                    if stream is None:
                        height, width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2  # yuv420p: even sides
                        stream = container.add_stream(codec, rate=1000)
                        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                        stream.time_base = TIME_BASE
                        stream.options = {"qscale": str(quality)}
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
                    vf.pts, vf.time_base = next(times), TIME_BASE
                    for packet in stream.encode(vf):
                        container.mux(packet)
            if stream is None:
                raise ValueError(f"{out}: no frames for a clip")
            for packet in stream.encode():
                container.mux(packet)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
