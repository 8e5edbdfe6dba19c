"""Answerers: one protocol (base.py), back ends built by name."""
from __future__ import annotations

from typing import Any

from tspo_ray.answerers.base import Answer, Answerer, AnswerRequest
from tspo_ray.config import ANSWERER_KINDS, Config, ConfigError

KINDS = ANSWERER_KINDS


def build_answerer(kind: str, settings: dict[str, Any] | None = None, **more: Any) -> Answerer:
    """Build an answerer back end: "embedded" (tiny CLIP), "vllm", "hf" (their own modules, imported lazily), or
    "simulated" (another back end's answers returned after a modelled Video-MLLM latency).

    Settings come as a mapping, as keywords (`build_answerer("vllm", model=..., num_frames=16)`), or both.
    """
    settings = {**(settings or {}), **more}
    if kind == "embedded":
        from tspo_ray.answerers.embedded import EmbeddedAnswerer
        from tspo_ray.video.encoders import load_encoder

        encoder = load_encoder(settings.pop("encoder", {"backend": "embedded"}))
        return EmbeddedAnswerer(encoder, families=embedded_families(settings), **settings)
    if kind == "vllm":
        from tspo_ray.answerers.vllm_answerer import VLLMAnswerer

        return VLLMAnswerer.from_settings(settings)
    if kind == "hf":
        from tspo_ray.answerers.hf_answerer import HFAnswerer

        return HFAnswerer.from_settings(settings)
    if kind == "simulated":  # another back end's answers after a real model's latency (simulated.py)
        from tspo_ray.answerers.simulated import build_simulated

        return build_simulated(settings, build_answerer)
    raise ValueError(f"unknown answerer kind {kind!r}; choose one of {KINDS}")


def embedded_families(settings: dict[str, Any]):
    """The question families the embedded answerer reads questions with, taken out of its settings: `families`
    (family files), else `world` (a world folder: the families its manifest keeps), else the shipped ones."""
    from tspo_ray.synthetic.dataset import world_families
    from tspo_ray.synthetic.families import load_families

    files, world = settings.pop("families", None), settings.pop("world", None)
    if files:
        return load_families(files)
    return world_families(world) if world else None


def settings_for(cfg: Config) -> dict[str, Any]:
    """The answerer settings a job passes on: the config's, and for the embedded answerer the world it answers
    about (data.root), whose manifest holds the question families it must read."""
    settings = dict(cfg.answerer.settings or {})
    if cfg.answerer.kind == "embedded" and "families" not in settings:
        settings.setdefault("world", str(cfg.data.root))
    return settings


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
    if kind == "simulated":
        from tspo_ray.answerers.simulated import SimulatedSettings

        inner = SimulatedSettings.from_dict(settings)
        return accepted_frames(inner.inner_kind, inner.inner_settings)
    parsed = parse_settings(kind, settings)
    return None if parsed is None else parsed.num_frames


def slots_per_actor(kind: str, settings: dict[str, Any] | None) -> int:
    """Calls one answerer actor takes at once: the simulated answerer's gpus_per_actor, else 1 (one engine)."""
    if kind == "simulated":
        from tspo_ray.answerers.simulated import SimulatedSettings

        return SimulatedSettings.from_dict(settings).gpus_per_actor
    return 1


def check_config(cfg: Config) -> Config:
    """What only the answerer back ends can tell about a config, checked before any work: their settings are valid
    (ConfigError naming answerer.settings.<name>), and the answerer accepts every frame count the config asks it
    about, T_s of training, of haystack items and of evaluation (it would reject every request otherwise)."""
    slots_per_actor(cfg.answerer.kind, cfg.answerer.settings)  # the simulated kind's settings, validated
    limit = accepted_frames(cfg.answerer.kind, cfg.answerer.settings)
    if limit is None:
        return cfg
    checked = [("eval.num_frames", cfg.eval.num_frames), ("policy.num_frames", cfg.policy.num_frames)]
    if cfg.haystack.probability > 0 and cfg.haystack.num_frames is not None:
        checked.append(("haystack.num_frames", cfg.haystack.num_frames))
    for where, frames in checked:
        if frames > limit:
            raise ConfigError(f"{where}: {frames} frames per question, but answerer.settings.num_frames={limit} is the "
                              f"most the {cfg.answerer.kind} answerer accepts (it would reject every request); raise "
                              f"answerer.settings.num_frames to at least {frames} or lower {where}")
    return cfg


class AnswererFactory:
    """A picklable zero-argument factory, so Ray actors build their own answerer where they run."""

    def __init__(self, kind: str, settings: dict[str, Any] | None = None):
        self.kind, self.settings = kind, dict(settings or {})

    def __call__(self) -> Answerer:
        return build_answerer(self.kind, self.settings)


__all__ = ["Answer", "AnswerRequest", "Answerer", "build_answerer", "AnswererFactory", "KINDS", "accepted_frames",
           "parse_settings", "slots_per_actor"]
