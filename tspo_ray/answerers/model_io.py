"""What the model back ends (vLLM, HF transformers) share: settings parsing, the model's prompt family, and the
HF-processor inputs and kwargs (the engine and the token count must see the same numbers).

The settings objects are duck-typed: they carry model, family, trust_remote_code, input_mode, num_frames,
frame_size, max_pixels, time_instruction, chat_template and mm_processor_kwargs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from tspo_ray.answerers import inputs, prompts
from tspo_ray.config import ConfigError  # an invalid answerer setting: the message names answerer.settings.<name>


def settings_from_dict(cls: type, raw: Any, kind: str):
    """A settings dataclass from a mapping: unknown keys are rejected with the list of known ones."""
    if not isinstance(raw, dict):
        raise ConfigError(f"answerer.settings: {kind} answerer settings must be a mapping, got {type(raw).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"answerer.settings.{unknown[0]}: unknown {kind} answerer option (known: {', '.join(names)})")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw]
    if missing:
        raise ConfigError(f"answerer.settings.{missing[0]}: required for the {kind} answerer")
    raw = {k: tuple(v) if isinstance(v, list) and k.endswith("_hw") else v for k, v in raw.items()}
    return cls(**raw)


def check_field(cfg: Any, ok: bool, name: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"answerer.settings.{name}: {why}, got {getattr(cfg, name)!r}")


def check_model_settings(cfg: Any) -> None:
    """The checks both back ends share."""
    check_field(cfg, isinstance(cfg.model, str) and bool(cfg.model), "model", "must be a model folder or hub id")
    check_field(cfg, cfg.family == "auto" or cfg.family in prompts.FAMILIES, "family",
                f"must be auto or one of {sorted(prompts.FAMILIES)}")
    check_field(cfg, cfg.input_mode in ("video", "images"), "input_mode", "must be video or images")
    check_field(cfg, isinstance(cfg.num_frames, int) and cfg.num_frames >= 1, "num_frames", "must be an int >= 1")
    check_field(cfg, cfg.frame_size is None or cfg.frame_size >= 28, "frame_size", "must be >= 28 px")
    check_field(cfg, cfg.max_pixels is None or cfg.max_pixels >= 28 * 28, "max_pixels", "must be >= 784")
    check_field(cfg, cfg.max_tokens >= 1, "max_tokens", "must be >= 1")


def resolve_family(cfg: Any) -> prompts.Family:
    """The prompt family: as configured, or from the model's config.json model_type."""
    if cfg.family != "auto":
        return prompts.FAMILIES[cfg.family]
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code).model_type
    try:
        return prompts.family_for(model_type)
    except ValueError as exc:
        raise ConfigError(f"answerer.settings.family: {cfg.model}: {exc}") from None


def prompt_style(cfg: Any, family: prompts.Family) -> inputs.PromptStyle:
    """Template (the configured one, a .jinja path or the family's), input mode and time instruction."""
    time_instr = family.time_instruction if cfg.time_instruction is None else cfg.time_instruction
    template = cfg.chat_template or family.chat_template
    if template.endswith(".jinja"):
        if not Path(template).is_file():
            raise ConfigError(f"answerer.settings.chat_template: no such file {template}")
        template = Path(template).read_text()
    return inputs.PromptStyle(template, cfg.input_mode, time_instr, family.video_metadata)


def processor_kwargs(cfg: Any, family: prompts.Family, processor) -> dict[str, Any]:
    """HF-processor call kwargs: the configured ones, plus max_pixels as Qwen-VL's size bound."""
    kwargs = dict(cfg.mm_processor_kwargs)
    if cfg.max_pixels is not None:
        if family.name != "qwen2_5_vl":
            raise ConfigError(f"answerer.settings.max_pixels: applies to Qwen-VL processors, not {family.name}")
        sub = processor.video_processor if cfg.input_mode == "video" else processor.image_processor
        kwargs["size"] = {"shortest_edge": min(sub.size["shortest_edge"], cfg.max_pixels),
                          "longest_edge": cfg.max_pixels}
    if family.name == "qwen2_5_vl" and cfg.input_mode == "video":
        kwargs.setdefault("cap_pixels_per_frame", False)  # max_pixels is the per-frame cap; T_s bounds the total
    return kwargs


def processor_inputs(items: Sequence[inputs.Prepared], style: inputs.PromptStyle) -> dict[str, Any]:
    """Keyword inputs of an HF processor call for a batch: texts, and videos (+ metadata) or images."""
    out: dict[str, Any] = {"text": [p.prompt for p in items]}
    if style.input_mode == "video":
        out["videos"] = [p.frames for p in items]
        if style.video_metadata:
            out["video_metadata"] = [inputs.hf_metadata(p.metadata) for p in items]
    else:
        out["images"] = [list(p.frames) for p in items]
    return out


def count_prompt_tokens(processor, item: inputs.Prepared, style: inputs.PromptStyle, kwargs: dict) -> int:
    """Prompt tokens of one prepared request after the processor expands its visual placeholders."""
    return int(processor(**processor_inputs([item], style), return_tensors="np", **kwargs)["input_ids"].shape[1])
