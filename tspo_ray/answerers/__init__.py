"""Answerers: one protocol (base.py), back ends built by name."""
from __future__ import annotations

from typing import Any

from tspo_ray.answerers.base import Answer, AnswerRequest, Answerer

KINDS = ("embedded", "vllm", "hf")


def build_answerer(kind: str, settings: dict[str, Any] | None = None, **more: Any) -> Answerer:
    """Build an answerer back end: "embedded" (tiny CLIP), "vllm" or "hf" (their own modules, imported lazily).

    Settings come as a mapping, as keywords (`build_answerer("vllm", model=..., num_frames=16)`), or both.
    """
    settings = {**(settings or {}), **more}
    if kind == "embedded":
        from tspo_ray.answerers.embedded import EmbeddedAnswerer
        from tspo_ray.encoders import load_encoder

        encoder = load_encoder(settings.pop("encoder", {"backend": "embedded"}))
        return EmbeddedAnswerer(encoder, **settings)
    if kind == "vllm":
        from tspo_ray.answerers.vllm_answerer import VLLMAnswerer

        return VLLMAnswerer.from_settings(settings)
    if kind == "hf":
        from tspo_ray.answerers.hf_answerer import HFAnswerer

        return HFAnswerer.from_settings(settings)
    raise ValueError(f"unknown answerer kind {kind!r}; choose one of {KINDS}")


def parse_settings(kind: str, settings: dict[str, Any] | None):
    """The typed settings of a model back end ("vllm", "hf"), validated; None for the embedded answerer.
    Raises ConfigError naming the field (answerer.settings.<name>) without loading any model."""
    if kind == "vllm":
        from tspo_ray.answerers.vllm_answerer import VLLMAnswererConfig

        return VLLMAnswererConfig.from_dict(dict(settings or {}))
    if kind == "hf":
        from tspo_ray.answerers.hf_answerer import HFAnswererConfig

        return HFAnswererConfig.from_dict(dict(settings or {}))
    return None


def accepted_frames(kind: str, settings: dict[str, Any] | None) -> int | None:
    """The most frames one request may carry: the model back ends size their inputs (and vLLM its engine limits)
    for settings.num_frames and reject larger requests; the embedded answerer takes any number (None)."""
    parsed = parse_settings(kind, settings)
    return None if parsed is None else parsed.num_frames


class AnswererFactory:
    """A picklable zero-argument factory, so Ray actors build their own answerer where they run."""

    def __init__(self, kind: str, settings: dict[str, Any] | None = None):
        self.kind, self.settings = kind, dict(settings or {})

    def __call__(self) -> Answerer:
        return build_answerer(self.kind, self.settings)


__all__ = ["Answer", "AnswerRequest", "Answerer", "build_answerer", "AnswererFactory", "KINDS", "accepted_frames",
           "parse_settings"]
