"""A pool of answerer actors that turns sampled keyframe sets into rewards.

Each actor owns one answerer (embedded, HF or vLLM) and scores whole groups: the G sets of a question go to the
model as one batched call, and the rewards are computed in the actor (the answerer itself never sees the labels:
the actor holds the record, the answerer gets only pixels, timestamps, question and options).
Jobs are keyed by (question id, frame sets): when an actor dies, the pool replaces it and resubmits exactly the jobs
that actor had not finished, so no group is lost or counted twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.data.records import QARecord
from tspo_ray.rewards import answer_reward, temporal_reward, total_reward
from tspo_ray.rollout import RewardResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreJob:
    """The G keyframe sets of one question, as native frame indices and timestamps (temporal order)."""

    record: QARecord
    video_path: str
    sets: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]

    def requests(self) -> list[AnswerRequest]:
        r = self.record
        return [
            AnswerRequest(key=f"{r.id}#{g}:{','.join(map(str, idx))}", video=self.video_path, frame_indices=idx,
                          timestamps_s=ts, question=r.question, options=tuple(r.options), duration_s=r.duration_s)
            for g, (idx, ts) in enumerate(self.sets)
        ]


def score_answers(job: ScoreJob, options: Sequence[str | None]) -> RewardResult:
    """Rewards of G answered sets: R_A from the parsed options, R_T from the sets' timestamps."""
    r = job.record
    r_a = torch.tensor([answer_reward(o, r.answer) for o in options])
    r_t = torch.tensor([temporal_reward(ts, r.target_spans) if r.type == "needle" else 0.0 for _, ts in job.sets])
    total = torch.tensor([total_reward(r.type, float(a), float(t)) for a, t in zip(r_a, r_t)])
    return RewardResult(total, r_a, r_t, parse_failures=sum(o is None for o in options))


class ScoringActor:
    """Ray actor body: one answerer, many jobs per call (all their sets in one batched answer call)."""

    def __init__(self, answerer_factory: Callable[[], Any]):
        self.answerer = answerer_factory()

    def score(self, jobs: Sequence[ScoreJob]) -> list[tuple[RewardResult, list[str]]]:
        requests = [req for job in jobs for req in job.requests()]
        answers = self.answerer.answer(requests)
        out, start = [], 0
        for job in jobs:
            chunk = answers[start : start + len(job.sets)]
            start += len(job.sets)
            out.append((score_answers(job, [a.option for a in chunk]), [a.text for a in chunk]))
        return out

    def pid(self) -> int:
        import os

        return os.getpid()


class AnswererPool:
    """N scoring actors; `score` spreads jobs over them and survives actor deaths."""

    def __init__(self, answerer_factory: Callable[[], Any], num_actors: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, jobs_per_call: int = 4, max_restarts: int = 10):
        self._remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(ScoringActor)
        self.factory, self.jobs_per_call, self.max_restarts = answerer_factory, jobs_per_call, max_restarts
        self.actors = [self._remote.remote(answerer_factory) for _ in range(num_actors)]
        self.restarts = 0

    def _replace(self, slot: int) -> None:
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise RuntimeError(f"answerer actors died {self.restarts} times; giving up (see the actor logs)")
        log.warning("answerer actor %d died; starting a replacement (%d so far)", slot, self.restarts)
        self.actors[slot] = self._remote.remote(self.factory)

    def score(self, jobs: Sequence[ScoreJob]) -> list[tuple[RewardResult, list[str]]]:
        """Results in job order. A chunk whose actor died is resubmitted whole to the replacement actor."""
        chunks = [list(range(i, min(i + self.jobs_per_call, len(jobs)))) for i in range(0, len(jobs), self.jobs_per_call)]
        results: dict[int, tuple[RewardResult, list[str]]] = {}
        pending = {}  # future -> (slot, chunk)
        queue = list(chunks)
        while queue or pending:
            busy = {slot for slot, _ in pending.values()}
            for slot in range(len(self.actors)):
                if queue and slot not in busy:
                    chunk = queue.pop(0)
                    pending[self.actors[slot].score.remote([jobs[i] for i in chunk])] = (slot, chunk)
                    busy.add(slot)
            done, _ = ray.wait(list(pending), num_returns=1)
            slot, chunk = pending.pop(done[0])
            try:
                out = ray.get(done[0])
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                self._replace(slot)
                queue.insert(0, chunk)
                continue
            for i, result in zip(chunk, out):
                results[i] = result
        return [results[i] for i in range(len(jobs))]

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
