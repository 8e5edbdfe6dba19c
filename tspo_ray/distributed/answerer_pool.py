"""The training pool: sampled keyframe sets in, rewards out, on top of the generic answerer actor pool.

Scoring is answering plus `tspo_ray.training.scoring.score_answers`: the actors (AnswererActorPool's, which exit when their engine dies and
are replaced, their unfinished chunks resent) answer requests that carry only what a model may see; the rewards are
computed here, by the pool's caller, which holds the records with their labels. Requests are keyed by
(question id, set, frame indices), so a resent chunk never makes a group lost or counted twice.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

from tspo_ray.answerers.inputs import dedupe
from tspo_ray.answerers.pool import AnswererActorPool
from tspo_ray.method.rewards import RewardResult
from tspo_ray.training.scoring import ScoreJob, score_answers


class AnswererPool(AnswererActorPool):
    """N answerer actors that score whole groups: `jobs_per_call` jobs (all their sets) per batched answer call.
    Each actor asks Ray for num_cpus, num_gpus and the custom `resources` (e.g. cluster.yaml's {rollout: 1})."""

    def __init__(self, answerer_factory: Callable[[], Any], num_actors: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, jobs_per_call: int = 4, max_restarts: int = 10,
                 resources: dict[str, float] | None = None, slots_per_actor: int = 1, batches_in_flight: int = 1):
        """jobs_per_call 0 spreads each batch over its share of the answerers: len(slots) // batches_in_flight calls
        (the batches the learner keeps in flight, max_lag + 1), a video's jobs together where they fit, and an idle
        answerer takes a chunk pinned to a busy one."""
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus} | ({"resources": dict(resources)} if resources else {})
        super().__init__(answerer_factory, num_actors, options, max_restarts, slots_per_actor=slots_per_actor)
        self.jobs_per_call, self.batches_in_flight = jobs_per_call, max(1, batches_in_flight)

    def chunk_size(self, num_jobs: int) -> int:
        """Jobs per answer call for a batch of num_jobs."""
        if self.jobs_per_call:
            return self.jobs_per_call
        share = max(1, len(self.actors) // self.batches_in_flight)
        return max(1, -(-num_jobs // share))

    def slot_of(self, video_path: str) -> int:
        """The actor a video's jobs go to: a stable hash of the path, so every actor's frame cache holds its own
        share of the videos instead of every actor decoding every video once."""
        return zlib.crc32(video_path.encode()) % len(self.actors)

    def score(self, jobs: Sequence[ScoreJob]) -> list[tuple[RewardResult, list[str]]]:
        """(rewards, answer texts) per job, in job order; survives actor deaths (see AnswererActorPool)."""
        per_job = [job.requests() for job in jobs]
        by_slot: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            by_slot.setdefault(self.slot_of(job.video_path), []).append(i)
        size = self.chunk_size(len(jobs))
        chunks, slots = [], []
        for slot, idx in sorted(by_slot.items()):
            for start in range(0, len(idx), size):
                chunks.append(dedupe([r for i in idx[start : start + size] for r in per_job[i]]))
                slots.append(slot)
        answers = self.answer_chunks(chunks, slots, steal=not self.jobs_per_call)
        out = []
        for job, reqs in zip(jobs, per_job):
            got = [answers[r.key] for r in reqs]
            out.append((score_answers(job, [a.option for a in got]), [a.text for a in got]))
        return out
