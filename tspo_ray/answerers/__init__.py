"""Answerers: one protocol (base.py), back ends registered by name (base.ANSWERERS), each with its settings."""
from __future__ import annotations

from typing import Any

from tspo_ray.answerers.base import ANSWERERS, Answer, Answerer, AnswerRequest
from tspo_ray.config import Config, ConfigError


def kinds() -> tuple[str, ...]:
    """The registered answerer kinds."""
    return ANSWERERS.names()


def build_answerer(kind: str, settings: dict[str, Any] | None = None, **more: Any) -> Answerer:
    """Build the answerer back end registered as `kind` ("embedded", "vllm", "hf", "simulated"; each module is
    imported when first named) from its settings, checked against the back end's declaration.

    Settings come as a mapping, as keywords (`build_answerer("vllm", model=..., num_frames=16)`), or both.
    """
    entry = ANSWERERS.get(kind)
    return entry.obj(parse_settings(kind, {**(settings or {}), **more}))


def settings_for(cfg: Config) -> dict[str, Any]:
    """The answerer settings a job passes on: the config's, and for the embedded answerer the world it answers
    about (data.root), whose manifest holds the question families it must read."""
    settings = dict(cfg.answerer.settings or {})
    if cfg.answerer.kind == "embedded" and "families" not in settings:
        settings.setdefault("world", str(cfg.data.root))
    return settings


def parse_settings(kind: str, settings: dict[str, Any] | None):
    """The typed settings of a back end, validated against its declaration without loading any model.
    Raises ConfigError naming the field (answerer.settings.<name>), or for an unknown kind answerer.kind."""
    try:
        ANSWERERS.get(kind)
    except ValueError as e:
        raise ConfigError(f"answerer.kind: {e}") from None
    return ANSWERERS.settings(kind, dict(settings or {}), "answerer.settings")


def accepted_frames(kind: str, settings: dict[str, Any] | None) -> int | None:
    """The most frames one request may carry: the model back ends size their inputs (and vLLM its engine limits)
    for settings.num_frames and reject larger requests; the embedded answerer takes any number (None)."""
    parsed = parse_settings(kind, settings)
    if hasattr(parsed, "inner_kind"):  # the simulated kind: its inner back end's limit
        return accepted_frames(parsed.inner_kind, parsed.inner_settings)
    return getattr(parsed, "num_frames", None)


def slots_per_actor(kind: str, settings: dict[str, Any] | None) -> int:
    """Calls one answerer actor takes at once: the simulated answerer's gpus_per_actor, else 1 (one engine)."""
    return int(getattr(parse_settings(kind, settings), "gpus_per_actor", 1))


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


__all__ = ["ANSWERERS", "Answer", "AnswerRequest", "Answerer", "build_answerer", "AnswererFactory", "kinds",
           "accepted_frames", "parse_settings", "slots_per_actor"]
