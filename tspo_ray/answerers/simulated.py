"""An answerer with the latency of a real Video-MLLM: another back end's answers, returned after a modelled time.

`answerer.kind: simulated` wraps any back end (by default the embedded answerer, so rewards stay the real rewards of
the frames chosen) and returns each batched call after

    per_call_s + sum over its requests of (per_request_s + per_frame_s * frames of the request)

seconds (times `time_scale`), the time a 7B Video-MLLM on vLLM on one GPU spends on it: G requests of T_s frames each
are prefilled (visual tokens dominate), then a few answer tokens are decoded for the whole batch at once. The inner
back end's own compute counts toward that time; a call whose compute alone takes longer overruns, and `stats` says
how often, so a benchmark can tell a simulated GPU from a saturated CPU.

Answers are cached per actor process by what a request shows (video, frames, timestamps, question, options,
duration; `answer_cache` entries, oldest dropped first): a set shown again (by another member of its group, or on a
later step once the policy has sharpened) costs no compute and gets the answer those frames got, so rewards stay
those of the frames chosen while the modelled time is still charged in full. Only the misses reach the inner back end.

One actor process can hold several simulated GPUs (`gpus_per_actor`): it then answers that many calls at once in
threads (the pool gives it as many slots), each sleeping its own latency, the inner answerer's compute serialised
under a lock. That is how 64 of them fit in a 2-core machine: 64 GPUs in 4 processes cost 4 copies of the embedded
answerer (about 300 MB each), not 64.

Default figures, per GPU (settings override every one):
- prefill at 17,900 input tokens/s: sglang's bench_serving against a vLLM server of Qwen2.5-VL-7B-Instruct,
  random images, 768 requests of about 1,000 vision tokens each and 1 output token, 17,916.56 input tokens/s and
  17.53 requests/s (github.com/sgl-project/sglang/pull/9812, the `vllm-chat` run);
- 196 visual tokens a frame for LLaVA-Video-7B (SigLIP at 384 px: 27 x 27 patches, pooled 2 x 2 to 14 x 14) and
  about 150 text tokens of prompt, question and options: per_frame_s = 196 / 17,900, per_request_s = 150 / 17,900;
- per call, 4 decoded tokens (an answer letter and the tags around it) at 25.44 ms each, the median inter-token
  latency of vLLM serving an 8B model under load (`vllm bench serve`, 1,000 ShareGPT prompts,
  github.com/vllm-project/vllm/pull/18566): per_call_s = 0.10.
So one question's G = 8 sets of T_s = 8 frames take 0.77 s of prefill, of T_s = 16 1.47 s.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Sequence

from pydantic import ConfigDict, Field, field_validator

from tspo_ray.answerers.base import ANSWERERS, Answer, AnswerRequest
from tspo_ray.settings import ConfigError, Settings

PREFILL_TOKENS_PER_S = 17_900.0
#: Answer.extra keys of a simulated answer: its share of its call's inner compute, modelled time and overrun (s)
CALL_TIMES = ("sim_compute_s", "sim_modelled_s", "sim_overrun_s")
TOKENS_PER_FRAME = 196
PROMPT_TOKENS = 150
DECODE_TOKENS = 4
INTER_TOKEN_S = 0.02544


@dataclass(frozen=True)
class LatencyModel:
    """Seconds one GPU spends on a batched call: a per-call cost plus a per-request and a per-frame cost. Pure."""

    per_call_s: float = DECODE_TOKENS * INTER_TOKEN_S
    per_request_s: float = PROMPT_TOKENS / PREFILL_TOKENS_PER_S
    per_frame_s: float = TOKENS_PER_FRAME / PREFILL_TOKENS_PER_S

    def seconds(self, frames_per_request: Sequence[int]) -> float:
        if not frames_per_request:
            return 0.0
        return self.per_call_s + sum(self.per_request_s + self.per_frame_s * f for f in frames_per_request)

    def question_seconds(self, group_size: int, frames: int, questions_per_call: int = 1) -> float:
        """Seconds of one call answering `questions_per_call` questions of G sets of T_s frames, per question."""
        return self.seconds([frames] * (group_size * questions_per_call)) / questions_per_call


class SimulatedSettings(Settings):
    """answerer.settings of the simulated kind."""

    section: ClassVar[str] = "answerer.settings"

    model_config = ConfigDict(frozen=True)
    inner_kind: str = "embedded"
    """The back end whose answers are returned ("embedded", "hf", "vllm")."""
    inner_settings: dict = Field(default_factory=dict)
    """That back end's settings."""
    per_call_s: float = Field(LatencyModel.per_call_s, ge=0)
    """Modelled seconds per batched call (decoding the answers)."""
    per_request_s: float = Field(LatencyModel.per_request_s, ge=0)
    """Modelled seconds per request (its text prompt's prefill)."""
    per_frame_s: float = Field(LatencyModel.per_frame_s, ge=0)
    """Modelled seconds per frame (its visual tokens' prefill)."""
    time_scale: float = Field(1.0, gt=0)
    """Every modelled time is multiplied by this (e.g. 0.2 for a shorter benchmark on a proportionally faster GPU)."""
    gpus_per_actor: int = Field(1, ge=1)
    """Simulated GPUs per actor process: the actor answers this many calls at once."""
    answer_cache: int = Field(100_000, ge=0)
    """Answers kept per actor process, keyed by what a request shows (0: every request reaches the inner back end)."""

    @field_validator("inner_kind")
    @classmethod
    def _not_itself(cls, kind: str) -> str:
        if kind == "simulated":
            raise ConfigError("answerer.settings.inner_kind: the simulated answerer cannot wrap itself")
        return kind

    def latency(self) -> LatencyModel:
        s = float(self.time_scale)
        return LatencyModel(s * self.per_call_s, s * self.per_request_s, s * self.per_frame_s)


class SimulatedAnswerer:
    """Answers with `inner`'s answers, each batched call returned after `latency.seconds(frames of its requests)`."""

    def __init__(self, inner, latency: LatencyModel, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.perf_counter, cache_size: int = 0):
        self.inner, self.latency, self._sleep, self._clock = inner, latency, sleep, clock
        self.name = f"simulated:{inner.name}"
        self._compute = threading.Lock()  # the inner answerer's caches are not thread-safe; the GPUs are separate
        self._stats_lock = threading.Lock()
        self._stats = {"calls": 0, "requests": 0, "modelled_s": 0.0, "slept_s": 0.0, "overrun_calls": 0,
                       "overrun_s": 0.0, "in_flight": 0, "max_in_flight": 0, "cache_hits": 0, "compute_s": 0.0}
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Answer] = OrderedDict()  # guarded by _compute

    @property
    def stats(self) -> dict[str, float]:
        with self._stats_lock:
            return dict(self._stats)

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        start = self._clock()
        with self._stats_lock:  # calls answered at once by this process's simulated GPUs
            self._stats["in_flight"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._stats["in_flight"])
        with self._compute:
            computing = self._clock()
            answers, hits = self._answer_cached(requests)
            computed = self._clock() - computing
        modelled = self.latency.seconds([len(r.frame_indices) for r in requests])
        remaining = modelled - (self._clock() - start)
        if remaining > 0:
            self._sleep(remaining)
        with self._stats_lock:
            s = self._stats
            s["in_flight"] -= 1
            s["calls"] += 1
            s["requests"] += len(requests)
            s["modelled_s"] += modelled
            s["slept_s"] += max(remaining, 0.0)
            s["cache_hits"] += hits
            s["compute_s"] += computed
            if remaining < 0:
                s["overrun_calls"] += 1
                s["overrun_s"] -= remaining
        # each answer carries its share of the call's times, so a caller summing over a batch's answers gets the
        # batch's compute, modelled and overrun seconds without asking the actors (CALL_TIMES)
        share = {"sim_compute_s": computed, "sim_modelled_s": modelled, "sim_overrun_s": max(-remaining, 0.0)}
        share = {k: v / len(requests) for k, v in share.items()}
        return [replace(a, extra={**a.extra, **share}) if isinstance(a, Answer) else a for a in answers]


    def _answer_cached(self, requests: Sequence[AnswerRequest]) -> tuple[list[Answer], int]:
        """The inner answers, the cached ones taken from the cache (caller holds _compute); and the hits."""
        if not self.cache_size:
            return self.inner.answer(requests), 0
        keys = [shown(r) for r in requests]
        missing: dict[tuple, AnswerRequest] = {}
        for k, r in zip(keys, requests):
            if k not in self._cache:
                missing.setdefault(k, r)  # the first request showing it is the one answered
        if missing:
            for k, a in zip(missing, self.inner.answer(list(missing.values()))):
                self._cache[k] = a
        out = []
        for k, r in zip(keys, requests):
            self._cache.move_to_end(k)
            cached = self._cache[k]
            out.append(replace(cached, key=r.key))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out, len(requests) - len(missing)


def shown(request: AnswerRequest) -> tuple:
    """What a model sees of a request (everything but its key): requests equal in it get the same answer."""
    return (request.video, request.frame_indices, request.timestamps_s, request.question, request.options,
            request.duration_s, request.frame_videos)


def build_simulated(settings: SimulatedSettings | dict[str, Any] | None,
                    build_inner: Callable[[str, dict], Any] | None = None) -> SimulatedAnswerer:
    if build_inner is None:
        from tspo_ray.answerers import build_answerer as build_inner
    parsed = SimulatedSettings.load(settings, "answerer.settings")
    return SimulatedAnswerer(build_inner(parsed.inner_kind, dict(parsed.inner_settings)), parsed.latency(),
                             cache_size=parsed.answer_cache)


ANSWERERS.register("simulated", build_simulated, settings=SimulatedSettings)
