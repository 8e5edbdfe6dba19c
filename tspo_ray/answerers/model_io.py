"""What the model back ends (vLLM, HF transformers) share: their settings, the model's prompt family, and the
HF-processor inputs and kwargs (the engine and the token count must see the same numbers).

The back ends' settings extend ModelSettings, declared once here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, field_validator

from tspo_ray.answerers import inputs, prompts
from tspo_ray.settings import ConfigError, Settings  # an invalid setting names answerer.settings.<name>


class ModelSettings(Settings):
    """What the model back ends (vLLM, HF transformers) share in answerer.settings."""

    section: ClassVar[str] = "answerer.settings"

    model: str = Field(min_length=1)
    """Model folder or hub id (HF format: Qwen2.5-VL, or LLaVA-OneVision incl. converted LLaVA-Video)."""
    family: str = "auto"
    """Prompt family: 'auto' (from the model's config.json model_type), 'qwen2_5_vl' or 'llava_onevision'."""
    input_mode: Literal["video", "images"] = "video"
    """Frames as one 'video' (with metadata where the family takes it) or as 'images' (one per frame)."""
    num_frames: int = Field(16, ge=1)
    """T_s: the most frames in one request (vLLM sizes its engine limits for it)."""
    frame_size: int | None = Field(None, ge=28)
    """Decode frames at frame_size x frame_size px (None: native size, resized by the model's processor)."""
    max_pixels: int | None = Field(None, ge=28 * 28)
    """Per-frame pixel cap of Qwen-VL processors (None: the processor's own)."""
    time_instruction: bool | None = None
    """Write the frames' timestamps into the prompt (None: the family's default; LLaVA-Video yes, Qwen2.5-VL no)."""
    chat_template: str | None = None
    """A Jinja chat template (or a .jinja path) replacing the family's."""
    max_tokens: int = Field(8, ge=1)
    """New tokens per answer (greedy); a letter needs one or two."""
    trust_remote_code: bool = False
    """Let transformers run the model folder's own code."""
    mm_processor_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra HF-processor kwargs (for the engine and the token count)."""
    num_cpus: float = Field(1.0, ge=0)
    """Ray actor resources: CPUs."""
    num_gpus: float = Field(0.0, ge=0)
    """Ray actor resources: GPUs (0 on CPU)."""

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family != "auto" and family not in prompts.FAMILIES:
            raise ConfigError(f"answerer.settings.family: must be auto or one of {sorted(prompts.FAMILIES)}, "
                              f"got {family!r}")
        return family

    def actor_options(self) -> dict[str, Any]:
        """Ray actor options: the resources one engine needs."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


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
