"""CLIP encoders behind one interface (FrameTextEncoder): the shipped tiny CLIP, transformers CLIP, open_clip."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from importlib import resources
from typing import Any

from tspo_ray.encoders.base import FrameTextEncoder

BACKENDS = ("embedded", "hf", "open_clip")


def embedded_clip_dir() -> str:
    """The tiny CLIP shipped inside the package (trained on the synthetic world)."""
    return str(resources.files("tspo_ray") / "assets" / "tiny_clip")


def load_encoder(spec: Any) -> FrameTextEncoder:
    """Build an encoder from {backend, model, pretrained, device} (a dict or the config's EncoderConfig)."""
    if is_dataclass(spec):
        spec = asdict(spec)
    spec = dict(spec or {})
    backend = spec.get("backend", "embedded")
    device = spec.get("device") or "cpu"
    if backend == "embedded":
        from tspo_ray.encoders.hf_clip import HFClipEncoder, weights_digest

        path = spec.get("model") or embedded_clip_dir()
        return HFClipEncoder(path, device=device, name=f"hf:tiny-clip@{weights_digest(path)}")
    if backend == "hf":
        from tspo_ray.encoders.hf_clip import HFClipEncoder

        if not spec.get("model"):
            raise ValueError("encoder backend 'hf' needs 'model' (a local CLIP folder or a hub id)")
        return HFClipEncoder(spec["model"], device=device)
    if backend == "open_clip":
        from tspo_ray.encoders.open_clip_encoder import OpenClipEncoder

        if not spec.get("model"):
            raise ValueError("encoder backend 'open_clip' needs 'model' (an architecture name, e.g. ViT-L-14)")
        return OpenClipEncoder(spec["model"], spec.get("pretrained"), device=device)
    raise ValueError(f"unknown encoder backend {backend!r}; choose one of {BACKENDS}")


__all__ = ["FrameTextEncoder", "load_encoder", "embedded_clip_dir", "BACKENDS"]
