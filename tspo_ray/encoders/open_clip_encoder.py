"""CLIP through open_clip: an architecture name plus a pretrained tag or a local checkpoint file."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


class OpenClipEncoder:
    def __init__(self, model: str, pretrained: str | None = None, device: str = "cpu", name: str | None = None):
        import open_clip

        if pretrained and (pretrained.startswith(("/", ".")) or pretrained.endswith((".pt", ".bin", ".safetensors"))):
            if not Path(pretrained).exists():
                raise FileNotFoundError(f"open_clip checkpoint {pretrained} does not exist")
        self.model, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        size = self.model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = getattr(self.model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(self.model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(device)).shape[-1])
        self.name = name or f"open_clip:{model}:{Path(pretrained).name if pretrained else 'random'}"

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [N, H, W, 3], got shape {frames.shape}")
        out = []
        for i in range(0, len(frames), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch_size])).to(self.device)
            x = x.permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
            out.append(self.model.encode_image((x.clamp(0, 1) - self.mean) / self.std))
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        return F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)).float(), dim=-1).cpu()
