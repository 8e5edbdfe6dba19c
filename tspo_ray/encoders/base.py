"""The one CLIP encoder interface every back end implements."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch


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
