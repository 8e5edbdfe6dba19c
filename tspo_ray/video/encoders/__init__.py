"""CLIP encoders behind one interface (FrameTextEncoder): the shipped tiny CLIP, transformers CLIP, open_clip.

    load_encoder({"backend": "embedded"})                                   # the tiny CLIP in tspo_ray/assets
    load_encoder({"backend": "hf", "model": "/models/clip-l14", "device": "cuda"})
    load_encoder({"backend": "open_clip", "model": "ViT-L-14", "pretrained": "/ckpt/open_clip_l14.bin"})
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from importlib import resources
from typing import Any, Mapping

from tspo_ray.video.encoders.base import FrameTextEncoder

BACKENDS = ("embedded", "hf", "open_clip")


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to build. Extra keys of a dict spec (e.g. the config's batch_size) are ignored here."""

    #: "embedded" (the shipped tiny CLIP), "hf" (transformers CLIPModel) or "open_clip"
    backend: str = "embedded"
    #: hf: local folder or hub id; open_clip: architecture name; embedded: optional folder overriding the shipped one
    model: str | None = None
    #: open_clip only: a pretrained tag or a local checkpoint file
    pretrained: str | None = None
    #: torch device ("cpu", "cuda", "cuda:1"); features always come back on CPU
    device: str = "cpu"
    #: hf only: preprocess with the saved CLIPProcessor itself (as the reference), not the batched tensor resize
    exact_processor: bool = False

    @classmethod
    def parse(cls, spec: Any) -> "EncoderSpec":
        if isinstance(spec, cls):
            return spec
        if is_dataclass(spec):
            spec = asdict(spec)
        elif hasattr(spec, "model_dump"):  # the config's features.encoder section
            spec = spec.model_dump()
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise ValueError(f"encoder spec must be a dict or dataclass, got {type(spec).__name__}")
        return cls(backend=spec.get("backend") or "embedded", model=spec.get("model"),
                   pretrained=spec.get("pretrained"), device=spec.get("device") or "cpu",
                   exact_processor=bool(spec.get("exact_processor", False)))


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
