"""The training pool: sampled keyframe sets in, rewards out, on top of the generic answerer actor pool.

Scoring is answering plus `tspo_ray.training.scoring.score_answers`: the actors (AnswererActorPool's, which exit when their engine dies and
are replaced, their unfinished chunks resent) answer requests that carry only what a model may see; the rewards are
computed here, by the pool's caller, which holds the records with their labels. Requests are keyed by
(question id, set, frame indices), so a resent chunk never makes a group lost or counted twice.
"""
from __future__ import annotations

import time
import zlib
from typing import Any, Callable, Sequence

from tspo_ray.answerers.inputs import dedupe
from tspo_ray.answerers.pool import AnswererActorPool
from tspo_ray.answerers.simulated import CALL_TIMES
from tspo_ray.method.rewards import RewardResult
from tspo_ray.training.scoring import ScoreJob, score_answers


def video_slot(path: str, num_slots: int) -> int:
    """The answerer a video's jobs prefer: a stable hash of its path, so every actor's frame cache holds its own share
    of the videos instead of every actor decoding every video once."""
    return zlib.crc32(path.encode()) % num_slots


def equal_cut(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of min(parts, n) consecutive pieces of n items whose sizes differ by at most one. Pure."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        end = start + base + (i < extra)
        bounds.append((start, end))
        start = end
    return bounds if n else []


def pinned_cut(paths: Sequence[str], num_slots: int, size: int) -> tuple[list[list[int]], list[int]]:
    """(job indices per call, the slot each call is pinned to): each video's jobs on its slot, `size` a call."""
    by_slot: dict[int, list[int]] = {}
    for i, path in enumerate(paths):
        by_slot.setdefault(video_slot(path, num_slots), []).append(i)
    groups, slots = [], []
    for slot, idx in sorted(by_slot.items()):
        for start in range(0, len(idx), size):
            groups.append(idx[start : start + size])
            slots.append(slot)
    return groups, slots


def spread_cut(paths: Sequence[str], num_slots: int, share: int) -> tuple[list[list[int]], list[int]]:
    """(job indices per call, each call's preferred slot) for a batch spread over `share` answerers: the jobs sorted
    by (slot, video), so a video's jobs sit together, then cut into `share` calls of equal size (sizes differ by
    at most one job: the batch ends when its largest call does). A call prefers the slot most of its jobs hash to."""
    order = sorted(range(len(paths)), key=lambda i: (video_slot(paths[i], num_slots), paths[i], i))
    groups, slots = [], []
    for start, end in equal_cut(len(order), share):
        idx = order[start:end]
        pins = [video_slot(paths[i], num_slots) for i in idx]
        groups.append(idx)
        slots.append(max(dict.fromkeys(pins), key=pins.count))
    return groups, slots


def rewards_of(jobs: Sequence[ScoreJob], per_job: Sequence[Sequence[Any]], answers: dict[str, Any],
               times: dict[str, float] | None) -> list[tuple[RewardResult, list[str]]]:
    """(rewards, answer texts) per job from the answers by request key; `times`, when given, receives a simulated
    answerer's compute, modelled and overrun seconds summed over the answers (CALL_TIMES)."""
    out = []
    for job, reqs in zip(jobs, per_job):
        got = [answers[r.key] for r in reqs]
        out.append((score_answers(job, [a.option for a in got]), [a.text for a in got]))
    if times is not None:
        for key in CALL_TIMES:
            times[key] = sum(float(a.extra.get(key, 0.0)) for a in answers.values())
    return out


class AnswererPool(AnswererActorPool):
    """N answerer actors that score whole groups: `jobs_per_call` jobs (all their sets) per batched answer call.
    Each actor asks Ray for num_cpus, num_gpus and the custom `resources` (e.g. cluster.yaml's {rollout: 1})."""

    def __init__(self, answerer_factory: Callable[[], Any], num_actors: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, jobs_per_call: int = 4, max_restarts: int = 10,
                 resources: dict[str, float] | None = None, slots_per_actor: int = 1, batches_in_flight: int = 1,
                 torch_threads: int = 0):
        """jobs_per_call 0 spreads each batch over its share of the answerers: len(slots) // batches_in_flight calls
        of equal size (the batches the learner keeps in flight, max_lag + 1; spread_cut), a video's jobs together
        where they fit, and an idle answerer takes a chunk pinned to a busy one."""
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus} | ({"resources": dict(resources)} if resources else {})
        super().__init__(answerer_factory, num_actors, options, max_restarts, slots_per_actor=slots_per_actor,
                         torch_threads=torch_threads)
        self.jobs_per_call, self.batches_in_flight = jobs_per_call, max(1, batches_in_flight)

    def slot_of(self, video_path: str) -> int:
        """The actor a video's jobs are pinned to (video_slot over this pool's actors)."""
        return video_slot(video_path, len(self.actors))

    def score(self, jobs: Sequence[ScoreJob], times: dict[str, float] | None = None
              ) -> list[tuple[RewardResult, list[str]]]:
        """(rewards, answer texts) per job, in job order; survives actor deaths (see AnswererActorPool). `times`, when
        given, receives the simulated answerer's compute, modelled and overrun seconds summed over the batch, and
        where the batch's time went outside the actors: pool_prepare_s (requests and the cut), pool_submit_s,
        pool_delivery_s and pool_calls (answer_chunks), pool_rewards_s (answers to rewards)."""
        t0 = time.perf_counter()
        per_job = [job.requests() for job in jobs]
        paths = [job.video_path for job in jobs]
        if self.jobs_per_call:
            groups, slots = pinned_cut(paths, len(self.actors), self.jobs_per_call)
        else:
            groups, slots = spread_cut(paths, len(self.actors), max(1, len(self.actors) // self.batches_in_flight))
        chunks = [dedupe([r for i in idx for r in per_job[i]]) for idx in groups]
        calls: dict[str, float] = {}
        t1 = time.perf_counter()
        answers = self.answer_chunks(chunks, slots, steal=not self.jobs_per_call, times=calls)
        t2 = time.perf_counter()
        out = rewards_of(jobs, per_job, answers, times)
        if times is not None:
            times.update(calls, pool_prepare_s=t1 - t0, pool_rewards_s=time.perf_counter() - t2)
        return out


class InProcessPool:
    """The training pool's interface (score, answer) over one answerer built in the caller's own process: the rollout
    coordinator answers its batches itself (train.num_answerers 0). For an answerer as cheap as the embedded one
    on a small machine, Ray calls to answerer actors cost more than the answering (docs/scaling.md); rollout and
    learning still run side by side, in the coordinator and the learner."""

    restarts, gave_up = 0, None

    def __init__(self, answerer_factory: Callable[[], Any]):
        self.answerer = answerer_factory()

    def processes(self) -> list[Any]:
        return []

    def answer(self, requests):
        unique = dedupe(requests)
        answers = {a.key: a for a in self.answerer.answer(unique)}
        return [answers[r.key] for r in requests]

    def score(self, jobs: Sequence[ScoreJob], times: dict[str, float] | None = None
              ) -> list[tuple[RewardResult, list[str]]]:
        """(rewards, answer texts) per job, in job order, as AnswererPool.score gives them."""
        per_job = [job.requests() for job in jobs]
        unique = dedupe([r for reqs in per_job for r in reqs])
        return rewards_of(jobs, per_job, {a.key: a for a in self.answerer.answer(unique)}, times)
