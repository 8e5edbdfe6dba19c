"""The Answerer protocol on a transformers Video-MLLM: the G frame sets of a question go through `generate` as one
left-padded batch, greedy, a few new tokens.

Same prompts, frames and video metadata as the vLLM answerer (answerers/inputs.py, model_io.py), so the two back
ends answer the same requests the same way; this one needs no engine and runs anywhere transformers does.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field

from tspo_ray.answerers import inputs
from tspo_ray.answerers.base import ANSWERERS, Answer, AnswerRequest
from tspo_ray.answerers.model_io import (
    ModelSettings,
    processor_inputs,
    processor_kwargs,
    prompt_style,
    resolve_family,
)

log = logging.getLogger(__name__)


class HFAnswererConfig(ModelSettings):
    """answerer.settings of the hf kind: a transformers image-text-to-text model in the actor's process."""

    label: ClassVar[str] = "hf answerer"
    batch_size: int | None = Field(None, ge=1)
    """Requests per generate call (None: all of a batch at once)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype ('auto': the checkpoint's)."""
    device: str = "auto"
    """Torch device ('auto': cuda when available, else cpu)."""
    attn_implementation: str | None = None
    """Transformers attention implementation (None: its default)."""


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
        return cls(HFAnswererConfig.load(settings, "answerer.settings"))

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


ANSWERERS.register("hf", HFAnswerer, settings=HFAnswererConfig)
