"""CLIP through transformers' CLIPModel: a local folder or a hub id (TSPO-0.4B bundles CLIP-L/14 this way)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _normalisation(model_dir: str) -> tuple[tuple, tuple]:
    cfg = Path(model_dir) / "preprocessor_config.json"
    if cfg.exists():
        raw = json.loads(cfg.read_text())
        return tuple(raw.get("image_mean", CLIP_MEAN)), tuple(raw.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


def weights_digest(model_dir: str) -> str:
    """A short digest of the weights file, so cache keys change when the weights do."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = Path(model_dir) / name
        if p.exists():
            h = hashlib.sha1()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()[:10]
    return "hub"


class HFClipEncoder:
    """FrameTextEncoder over a transformers CLIPModel; resizing and normalisation follow the model's config."""

    def __init__(self, model: str, device: str = "cpu", name: str | None = None):
        from transformers import AutoTokenizer, CLIPModel

        local = Path(model).exists()
        if not local and (model.startswith(("/", ".")) or model.endswith(("/",))):
            raise FileNotFoundError(f"CLIP model folder {model} does not exist")
        self.model = CLIPModel.from_pretrained(model).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.device = device
        self.image_size = self.model.config.vision_config.image_size
        mean, std = _normalisation(model) if local else (CLIP_MEAN, CLIP_STD)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.dim = self.model.config.projection_dim
        self.name = name or f"hf:{Path(model).name if local else model}@{weights_digest(model) if local else 'hub'}"

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [N, H, W, 3], got shape {frames.shape}")
        out = []
        for i in range(0, len(frames), batch_size):
            pixel_values = self.preprocess(frames[i : i + batch_size])
            out.append(_features(self.model.get_image_features(pixel_values=pixel_values)))
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        max_len = self.model.config.text_config.max_position_embeddings
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_features(self.model.get_text_features(**tok)).float(), dim=-1).cpu()


def _features(output) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")
