"""CLIP through transformers' CLIPModel: a local folder or a hub id (TSPO-0.4B bundles CLIP-L/14 this way).

Frames are resized and normalised here, in batches, from the numbers in the model's preprocessor_config.json
(CLIP's resize-shortest-edge + centre-crop when the saved processor asks for it); when no image processor is
saved (the shipped tiny CLIP), the whole frame is resized to the model's image_size and normalised with the
saved mean/std, or CLIP's defaults.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tspo_ray.video.encoders.base import encode_frames_in_batches

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: appended to every encoder name (the feature-store key): features are raw projected CLIP features
FEATURE_KIND = ":raw"


@dataclass(frozen=True)
class ImageSettings:
    """How raw frames become pixel_values: square resize (crop=None) or shortest-edge resize then centre crop."""

    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    shortest_edge: int | None = None
    crop: int | None = None


def image_settings(processor_cfg: dict | None, image_size: int) -> ImageSettings:
    """Settings from a preprocessor_config.json dict (None: no processor saved). Pure."""
    if not processor_cfg:
        return ImageSettings(image_size)
    mean = tuple(processor_cfg.get("image_mean", CLIP_MEAN))
    std = tuple(processor_cfg.get("image_std", CLIP_STD))
    crop = processor_cfg.get("crop_size")
    if processor_cfg.get("do_center_crop", crop is not None) and crop:
        crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
        size = processor_cfg.get("size", crop)
        shortest = size.get("shortest_edge", crop) if isinstance(size, dict) else int(size)
        return ImageSettings(image_size, mean, std, shortest, crop)
    return ImageSettings(image_size, mean, std)


def file_digest(path: str | Path, length: int = 10) -> str:
    """A short SHA-1 of a file's bytes, so cache keys change when the weights do."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def weights_digest(model_dir: str) -> str:
    """The digest of a CLIP folder's weights file ("hub" when it has none)."""
    for name in WEIGHT_FILES:
        p = Path(model_dir) / name
        if p.exists():
            return file_digest(p)
    return "hub"


def _resolve(model: str, filename: str) -> str | None:
    """A file of a local folder or of a hub id already in the local cache; None when there is none."""
    local = Path(model) / filename
    if Path(model).is_dir():
        return str(local) if local.exists() else None
    try:
        from transformers.utils import cached_file

        return cached_file(model, filename, local_files_only=True, _raise_exceptions_for_missing_entries=False)
    except Exception:  # not cached / not a hub id: the caller falls back to defaults
        return None


class HFClipEncoder:
    """FrameTextEncoder over a transformers CLIPModel and its AutoTokenizer."""

    def __init__(self, model: str, device: str = "cpu", name: str | None = None, exact_processor: bool = False):
        """exact_processor: preprocess frames with the saved CLIP image processor itself (PIL resize and crop, frame
        by frame, as the TSPO reference does) instead of the batched torch resize; needs preprocessor_config.json."""
        from transformers import AutoTokenizer, CLIPModel

        model = str(model)
        looks_local = model.startswith(("/", ".", "~")) or Path(model).exists()
        if looks_local and not Path(model).is_dir():
            raise FileNotFoundError(f"CLIP model folder {model} does not exist")
        try:
            clip = CLIPModel.from_pretrained(model, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(model)
        except OSError as exc:
            raise OSError(f"cannot load CLIP model {model!r}: {str(exc).splitlines()[0]}") from exc
        cfg_path = _resolve(model, "preprocessor_config.json")
        processor_cfg = json.loads(Path(cfg_path).read_text()) if cfg_path else None
        settings = image_settings(processor_cfg, clip.config.vision_config.image_size)
        weights = next((p for f in WEIGHT_FILES if (p := _resolve(model, f))), None)
        label = Path(model).name if looks_local else model
        name = name or f"hf:{label}@{file_digest(weights) if weights else 'hub'}{FEATURE_KIND}"
        self._setup(clip, tokenizer, settings, name, device)
        if exact_processor:
            if not cfg_path:
                raise FileNotFoundError(f"{model}: exact_processor needs a saved preprocessor_config.json")
            self.image_processor = reference_image_processor(str(Path(cfg_path).parent))
            self.name += ":pil"

    @classmethod
    def from_parts(cls, clip, tokenizer, settings: ImageSettings, name: str, device: str = "cpu") -> "HFClipEncoder":
        """Wrap an already-built CLIPModel (e.g. one being trained) behind the encoder interface."""
        enc = cls.__new__(cls)
        enc._setup(clip, tokenizer, settings, name, device)
        return enc

    def _setup(self, clip, tokenizer, settings: ImageSettings, name: str, device: str) -> None:
        self.model = clip.to(device).eval()
        self.tokenizer, self.settings, self.name, self.device = tokenizer, settings, name, device
        self.dim = int(clip.config.projection_dim)
        self.max_tokens = int(clip.config.text_config.max_position_embeddings)
        self.image_processor = None
        self.mean = torch.tensor(settings.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(settings.std, device=device).view(1, 3, 1, 1)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> normalised float pixel_values [N, 3, S, S] on the encoder's device."""
        if self.image_processor is not None:
            from PIL import Image

            images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
            return self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        s = self.settings
        if s.crop is not None:
            h, w = x.shape[-2:]
            scale = s.shortest_edge / min(h, w)
            size = (max(s.crop, round(h * scale)), max(s.crop, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            top, left = (size[0] - s.crop) // 2, (size[1] - s.crop) // 2
            x = x[..., top : top + s.crop, left : left + s.crop]
        elif x.shape[-2:] != (s.image_size, s.image_size):
            x = F.interpolate(x, size=(s.image_size, s.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """uint8 [N, H, W, 3] RGB frames -> raw projected float32 [N, D] on CPU."""
        return encode_frames_in_batches(
            frames, batch_size, self.dim,
            lambda batch: _features(self.model.get_image_features(pixel_values=self.preprocess(batch))))

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> raw projected float32 [N, D] on CPU."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tok)).float().cpu()


def reference_image_processor(folder: str):
    """The CLIP image processor saved in a folder, on PIL as transformers 4.x's CLIPImageProcessor (which the TSPO
    reference pins) ran it; transformers 5 names that back end CLIPImageProcessorPil."""
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as processor_class
    return processor_class.from_pretrained(folder)


def _features(output) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")
