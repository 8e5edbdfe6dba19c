"""The one CLIP encoder interface every back end implements."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class FrameTextEncoder(Protocol):
    """Encodes frames and text into one space. Features are the RAW projected CLIP features (get_image_features /
    get_text_features, not L2-normalised, as the TSPO agent is fed them), float32, on CPU. Consumers that want
    cosines normalise themselves."""

    #: a stable identity for cache keys (back end + model + weights + feature kind), e.g.
    #: "open_clip:ViT-B-32:laion2b:raw"; the ":raw" suffix keeps features stored by earlier, normalising versions
    #: from ever being reused
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
    batch_size frames at a time, return the raw (unnormalised) float32 [N, dim] on CPU (an empty [0, dim] for no
    frames)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    out = [torch.zeros(0, dim)]
    for i in range(0, len(frames), batch_size):
        out.append(encode_batch(frames[i : i + batch_size]).float().cpu())
    return torch.cat(out)
