"""CLIP encoders behind one interface (FrameTextEncoder): the shipped tiny CLIP, transformers CLIP, open_clip.

    load_encoder({"backend": "embedded"})                                   # the tiny CLIP in tspo_ray/assets
    load_encoder({"backend": "hf", "model": "/models/clip-l14", "device": "cuda"})
    load_encoder({"backend": "open_clip", "model": "ViT-L-14", "pretrained": "/ckpt/open_clip_l14.bin"})
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from importlib import resources
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field

from tspo_ray.settings import Settings
from tspo_ray.video.encoders.base import FrameTextEncoder

BACKENDS = ("embedded", "hf", "open_clip")


class EncoderSpec(Settings):
    """The CLIP encoder that produces the frame features F_f and the question feature F_t (the config's
    features.encoder, Serve's encoder, the embedded answerer's encoder)."""

    section: ClassVar[str] = "features.encoder"
    backend: Literal["embedded", "hf", "open_clip"] = "embedded"
    """CLIP back end: 'embedded' (the shipped tiny CLIP), 'hf' (transformers CLIPModel) or 'open_clip'."""
    model: str | None = None
    """hf: local folder or hub id; open_clip: architecture name; embedded: optional folder overriding the shipped
    one."""
    pretrained: str | None = None
    """open_clip only: a pretrained tag or a local checkpoint file."""
    device: str = "cpu"
    """Torch device for encoding ('cpu', 'cuda', 'cuda:1'); features always come back on CPU."""
    batch_size: int = Field(64, ge=1)
    """Frames encoded per forward pass."""
    exact_processor: bool = False
    """hf: preprocess with the folder's saved CLIPProcessor itself (PIL resize and crop), as the reference does;
    slower than the batched tensor resize, which matches it only approximately."""

    @classmethod
    def parse(cls, spec: Any) -> "EncoderSpec":
        if is_dataclass(spec) and not isinstance(spec, type):
            spec = asdict(spec)
        if spec is not None and not isinstance(spec, (Mapping, cls)):
            raise ValueError(f"encoder spec must be a dict or an EncoderSpec, got {type(spec).__name__}")
        return cls.load(dict(spec) if isinstance(spec, Mapping) else spec)


def embedded_clip_dir() -> str:
    """The tiny CLIP shipped inside the package (trained on the synthetic world by pipelines/train_tiny_clip.py)."""
    return str(resources.files("tspo_ray") / "assets" / "tiny_clip")


def load_encoder(spec: Any = None) -> FrameTextEncoder:
    """Build an encoder from {backend, model, pretrained, device} (a dict, an EncoderSpec or the config's
    EncoderConfig). Unknown back ends and missing fields raise ValueError; missing files FileNotFoundError."""
    s = EncoderSpec.parse(spec)
    if s.backend == "embedded":
        from tspo_ray.video.encoders.hf_clip import FEATURE_KIND, HFClipEncoder, weights_digest

        path = s.model or embedded_clip_dir()
        return HFClipEncoder(path, device=s.device, name=f"hf:tiny-clip@{weights_digest(path)[:8]}{FEATURE_KIND}")
    if s.backend == "hf":
        from tspo_ray.video.encoders.hf_clip import HFClipEncoder

        if not s.model:
            raise ValueError("encoder backend 'hf' needs 'model' (a local CLIP folder or a hub id)")
        return HFClipEncoder(s.model, device=s.device, exact_processor=s.exact_processor)
    if s.backend == "open_clip":
        from tspo_ray.video.encoders.open_clip_encoder import OpenClipEncoder

        if not s.model:
            raise ValueError("encoder backend 'open_clip' needs 'model' (an architecture name, e.g. ViT-L-14)")
        return OpenClipEncoder(s.model, s.pretrained, device=s.device)
    raise ValueError(f"unknown encoder backend {s.backend!r}; choose one of {BACKENDS}")


__all__ = ["FrameTextEncoder", "EncoderSpec", "load_encoder", "embedded_clip_dir", "BACKENDS"]
