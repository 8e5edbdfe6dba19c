"""The Answerer protocol on a transformers Video-MLLM: the G frame sets of a question go through `generate` as one
left-padded batch, greedy, a few new tokens.

Same prompts, frames and video metadata as the vLLM answerer (answerers/inputs.py, model_io.py), so the two back
ends answer the same requests the same way; this one needs no engine and runs anywhere transformers does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tspo_ray.answerers import inputs
from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.answerers.model_io import (
    check_field,
    check_model_settings,
    processor_inputs,
    processor_kwargs,
    prompt_style,
    resolve_family,
    settings_from_dict,
)

log = logging.getLogger(__name__)
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class HFAnswererConfig:
    #: model folder or hub id (Qwen2.5-VL, LLaVA-OneVision incl. converted LLaVA-Video)
    model: str
    #: prompt family: "auto" (from config.json), "qwen2_5_vl" or "llava_onevision"
    family: str = "auto"
    #: frames as one "video" or as "images"
    input_mode: str = "video"
    #: the most frames in one request
    num_frames: int = 16
    #: decode frames at frame_size x frame_size (None: native size)
    frame_size: int | None = None
    #: per-frame pixel cap of Qwen-VL processors (None: the processor's own)
    max_pixels: int | None = None
    #: timestamps in the prompt (None: the family's default)
    time_instruction: bool | None = None
    #: a Jinja chat template (or .jinja path) replacing the family's
    chat_template: str | None = None
    #: new tokens per answer (greedy)
    max_tokens: int = 8
    #: requests per generate call (None: all of a batch at once)
    batch_size: int | None = None
    #: weights dtype ("auto": the checkpoint's)
    dtype: str = "auto"
    #: torch device ("auto": cuda when available, else cpu)
    device: str = "auto"
    #: transformers attention implementation (None: its default)
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    #: extra HF-processor call kwargs
    mm_processor_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Ray actor resources
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "HFAnswererConfig":
        """Build from a settings mapping; unknown keys and bad values raise ConfigError naming the field."""
        return settings_from_dict(cls, raw, "hf").validate()

    def validate(self) -> "HFAnswererConfig":
        check_model_settings(self)
        check_field(self, self.batch_size is None or self.batch_size >= 1, "batch_size", "must be >= 1")
        check_field(self, self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}")
        return self

    def actor_options(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


class HFAnswerer:
    """Greedy answers from a transformers image-text-to-text model, one left-padded generate per batch."""

    def __init__(self, config: HFAnswererConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.config = cfg = config
        self.family = resolve_family(cfg)
        self.style = prompt_style(cfg, self.family)
        self.name = f"hf:{Path(cfg.model).name or cfg.model}"
        self.stats = {"generate_calls": 0, "requests": 0, "failed": 0}
        self.processor = AutoProcessor.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.processor.tokenizer.padding_side = "left"  # generation continues every row from its last token
        self.mm_kwargs = processor_kwargs(cfg, self.family, self.processor)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs: dict[str, Any] = {"dtype": cfg.dtype if cfg.dtype == "auto" else getattr(torch, cfg.dtype),
                                  "trust_remote_code": cfg.trust_remote_code}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, **kwargs).to(device).eval()
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "HFAnswerer":
        return cls(HFAnswererConfig.from_dict(settings))

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        """One Answer per request, in order; unanswerable requests get option None and extra["error"]."""
        unique = inputs.dedupe(requests)
        ready, failed = inputs.prepare(unique, self.style, self.config.frame_size)
        for item in [p for p in ready if len(p.frames) > self.config.num_frames]:
            failed[item.key] = f"{item.key}: {len(item.frames)} frames, more than num_frames={self.config.num_frames}"
            ready.remove(item)
        answers = {key: inputs.failed_answer(key, why) for key, why in failed.items()}
        size = self.config.batch_size or max(len(ready), 1)
        for start in range(0, len(ready), size):
            answers.update(self._generate_isolating(ready[start : start + size]))
        self.stats["requests"] += len(unique)
        self.stats["failed"] += sum(a.option is None and "error" in a.extra for a in answers.values())
        return [answers[r.key] for r in requests]

    def _generate_isolating(self, batch: list[inputs.Prepared]) -> dict[str, Answer]:
        """The batch in one call; if the processor rejects it, item by item so only the bad ones fail."""
        try:
            return self._generate(batch)
        except (ValueError, TypeError) as exc:
            if len(batch) == 1:
                key = batch[0].key
                return {key: inputs.failed_answer(key, f"{key}: {type(exc).__name__}: {exc}")}
        result = {}
        for item in batch:
            result.update(self._generate_isolating([item]))
        return result

    def _generate(self, batch: list[inputs.Prepared]) -> dict[str, Answer]:
        import torch

        enc = self.processor(**processor_inputs(batch, self.style), padding=True, return_tensors="pt",
                             **self.mm_kwargs)
        enc = enc.to(self.model.device).to(self.model.dtype)  # casts only the floating tensors (pixels)
        self.stats["generate_calls"] += 1
        with torch.inference_mode():
            out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.config.max_tokens,
                                      pad_token_id=self.pad_id)
        texts = self.processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        return {item.key: inputs.to_answer(item.key, text, item.num_options,
                                           {"prompt_tokens": int(n), "num_frames": len(item.frames)}, item.options)
                for item, text, n in zip(batch, texts, lengths)}
