"""Writing a planned video to a real file (PyAV, MPEG-4 Part 2), atomically: temp name, then rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tspo_ray.synthetic.render import Obj, render_frame
from tspo_ray.synthetic.world import VideoPlan


def frame_at(plan: VideoPlan, t: float, size: int, noise_seed: int) -> np.ndarray:
    """The frame shown at time t (the segment containing t; the last one past the end)."""
    seg = next((s for s in plan.segments if s.start_s <= t < s.end_s), plan.segments[-1])
    frac = (t - seg.start_s) / max(seg.end_s - seg.start_s, 1e-6)
    x = seg.x0 + (seg.x1 - seg.x0) * frac
    return render_frame([Obj(seg.shape, seg.colour, x, 0.5, 0.3)], seg.background, size, noise_seed)


def write_video(plan: VideoPlan, path: str | Path, fps: int = 2, size: int = 128, seed: int = 0) -> int:
    """Render and encode the whole plan; returns the number of frames. Short GOPs keep random access cheap."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    n = int(round(plan.duration_s * fps))
    try:
        with av.open(tmp, mode="w") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.gop_size = 4
            stream.options = {"qscale": "3"}
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(frame_at(plan, i / fps, size, seed * 1_000_003 + i), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
