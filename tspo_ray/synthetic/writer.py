"""Writing a planned video to a real file (PyAV, MPEG-4 Part 2, yuv420p), atomically: temp name, then rename.

MPEG-4 Part 2 at qscale 3 keeps the world small (~0.3 kB a frame) and decodes frame-exactly with decord; the
libx264 encoder in the PyAV wheel also decodes correctly but keeps the render noise (~30x larger files).
The file's `comment` tag carries a fingerprint of the plan and settings, so a rebuild can tell a complete,
current video from a stale one without decoding it.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from tspo_ray.synthetic.render import Obj, render_frame
from tspo_ray.synthetic.world import VideoPlan

CODEC = "mpeg4"
GOP = 4  # short GOPs keep random access (decoding a few candidate frames) cheap
QSCALE = 3
WRITER_VERSION = 2  # bump when the pixels of a plan change, so that old files are rewritten


def scene_at(plan: VideoPlan, t: float) -> tuple[list[Obj], str]:
    """What the video shows at time t: (objects, background) of the segment holding t (the last one past the end)."""
    starts = [s.start_s for s in plan.segments]
    seg = plan.segments[max(0, min(bisect.bisect_right(starts, t) - 1, len(starts) - 1))]
    frac = min(max((t - seg.start_s) / max(seg.end_s - seg.start_s, 1e-9), 0.0), 1.0)
    x = seg.x0 + (seg.x1 - seg.x0) * frac
    y = seg.y0 + (seg.y1 - seg.y0) * frac
    return [Obj(seg.shape, seg.colour, x, y, seg.scale)], seg.background


def frame_at(plan: VideoPlan, t: float, size: int, noise_seed: int | None) -> np.ndarray:
    """The rendered frame at time t: uint8 [size, size, 3] RGB."""
    objects, background = scene_at(plan, t)
    return render_frame(objects, background, size, noise_seed)


def fingerprint(plan: VideoPlan, size: int, seed: int) -> str:
    """A short hash of everything that determines the file's pixels."""
    blob = json.dumps({"plan": plan.to_dict(), "size": size, "seed": seed, "codec": CODEC, "gop": GOP,
                       "qscale": QSCALE, "writer": WRITER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def video_is_complete(path: str | Path, expected_fingerprint: str, num_frames: int) -> bool:
    """True when path is a readable video written for this fingerprint with the expected frame count."""
    import av

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return (container.metadata.get("comment") == f"tspo-synthetic {expected_fingerprint}"
                    and stream.frames == num_frames)
    except (av.FFmpegError, IndexError, OSError):
        return False


def write_video(plan: VideoPlan, path: str | Path, size: int = 128, seed: int = 0) -> int:
    """Render and encode the whole plan at plan.fps; returns the number of frames written.

    Frame i shows time i / fps, with render noise seeded by (seed, i). The file appears under its final name only
    when complete, with the usual permissions (not the private mode of a temp file).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            container.metadata["comment"] = f"tspo-synthetic {fingerprint(plan, size, seed)}"
            stream = container.add_stream(CODEC, rate=plan.fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.gop_size = GOP
            stream.options = {"qscale": str(QSCALE)}
            for i in range(plan.num_frames):
                arr = frame_at(plan, i / plan.fps, size, seed * 1_000_003 + i)
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; the dataset is for every reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return plan.num_frames
