"""The one CLIP encoder interface every back end implements."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F


@runtime_checkable
class FrameTextEncoder(Protocol):
    """Encodes frames and text into one space. Features are returned L2-normalised, float32, on CPU."""

    #: a stable identity for cache keys (back end + model + weights), e.g. "open_clip:ViT-B-32:laion2b"
    name: str
    #: feature dimension D
    dim: int

    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """uint8 [N, H, W, 3] RGB frames -> float32 [N, D]."""
        ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> float32 [N, D]."""
        ...


def encode_frames_in_batches(frames: np.ndarray, batch_size: int, dim: int,
                             encode_batch: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    """What every back end's encode_frames does around its model: check the frames, run `encode_batch` on
    batch_size frames at a time, return L2-normalised float32 [N, dim] on CPU (an empty [0, dim] for no frames)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    out = [torch.zeros(0, dim)]
    for i in range(0, len(frames), batch_size):
        out.append(encode_batch(frames[i : i + batch_size]).float().cpu())
    return F.normalize(torch.cat(out), dim=-1)
