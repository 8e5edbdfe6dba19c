"""What every video reader shares: the error a bad file raises and what a probe tells about a file."""
from __future__ import annotations

from dataclasses import dataclass


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


class CheckedPath(str):
    """A resolved path a caller has checked (e.g. against Serve's video roots): decoding refuses to open anything but
    that very file, so a symlink swapped in after the check leads nowhere (tspo_ray.video.source)."""

    __slots__ = ()
