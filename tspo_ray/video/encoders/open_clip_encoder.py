"""CLIP through open_clip: an architecture name plus a pretrained tag or a local checkpoint file.

Frames go through the model's own eval transform (resize, centre crop, normalise), applied to whole batches of
tensors: open_clip's transforms pass tensors through, except ToTensor, whose uint8 -> [0, 1] step is done here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import ToTensor

from tspo_ray.video.encoders.base import encode_frames_in_batches
from tspo_ray.video.encoders.hf_clip import FEATURE_KIND, file_digest


def _is_path(pretrained: str) -> bool:
    return pretrained.startswith(("/", ".", "~")) or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


class OpenClipEncoder:
    """FrameTextEncoder over an open_clip model, its tokenizer and its eval transform."""

    def __init__(self, model: str, pretrained: str | None = None, device: str = "cpu", name: str | None = None):
        import open_clip

        if not model.startswith(("hf-hub:", "local-dir:")) and model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r} (see open_clip.list_models())")
        tag = "random"
        if pretrained and _is_path(pretrained):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"open_clip checkpoint {pretrained} does not exist")
            pretrained, tag = str(path), f"{path.name}@{file_digest(path)}"
        elif pretrained:
            tag = pretrained
        self.model, _, self.transform = open_clip.create_model_and_transforms(model, pretrained=pretrained,
                                                                              device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(device)).shape[-1])
        self.name = name or f"open_clip:{model}:{tag}{FEATURE_KIND}"

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> the model's normalised input [N, 3, S, S], through its eval transform."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)  # uint8 stays uint8
        converted = False
        for t in self.transform.transforms:
            if isinstance(t, ToTensor):  # open_clip's MaybeToTensor passes tensors through unscaled
                x, converted = x.float() / 255.0, True
            else:
                if not converted and type(t).__name__ == "Normalize":
                    x, converted = x.float() / 255.0, True
                x = t(x)
        return x if converted else x.float() / 255.0

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """uint8 [N, H, W, 3] RGB frames -> raw projected float32 [N, D] on CPU."""
        return encode_frames_in_batches(frames, batch_size, self.dim,
                                        lambda batch: self.model.encode_image(self.preprocess(batch)))

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> raw projected float32 [N, D] on CPU."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float().cpu()
