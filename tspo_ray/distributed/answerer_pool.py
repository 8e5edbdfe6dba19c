"""The training pool: sampled keyframe sets in, rewards out, on top of the generic answerer actor pool.

Scoring is answering plus `score_answers`: the actors (AnswererActorPool's, which exit when their engine dies and
are replaced, their unfinished chunks resent) answer requests that carry only what a model may see; the rewards are
computed here, by the pool's caller, which holds the records with their labels. Requests are keyed by
(question id, set, frame indices), so a resent chunk never makes a group lost or counted twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.answerers.inputs import dedupe
from tspo_ray.answerers.pool import AnswererActorPool
from tspo_ray.data.records import QARecord
from tspo_ray.rewards import answer_reward, temporal_reward, total_reward
from tspo_ray.rollout import RewardResult


@dataclass(frozen=True)
class ScoreJob:
    """The G keyframe sets of one question, as native frame indices and timestamps (temporal order)."""

    record: QARecord
    video_path: str
    sets: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]

    def requests(self) -> list[AnswerRequest]:
        return [AnswerRequest.for_record(self.record, self.video_path, idx, ts, f"{g}:{','.join(map(str, idx))}")
                for g, (idx, ts) in enumerate(self.sets)]


def score_answers(job: ScoreJob, options: Sequence[str | None]) -> RewardResult:
    """Rewards of G answered sets: R_A from the parsed options, R_T from the sets' timestamps."""
    r = job.record
    r_a = torch.tensor([answer_reward(o, r.answer) for o in options])
    r_t = torch.tensor([temporal_reward(ts, r.target_spans) if r.type == "needle" else 0.0 for _, ts in job.sets])
    total = torch.tensor([total_reward(r.type, float(a), float(t)) for a, t in zip(r_a, r_t)])
    return RewardResult(total, r_a, r_t, parse_failures=sum(o is None for o in options))


class AnswererPool(AnswererActorPool):
    """N answerer actors that score whole groups: `jobs_per_call` jobs (all their sets) per batched answer call.
    Each actor asks Ray for num_cpus, num_gpus and the custom `resources` (e.g. cluster.yaml's {rollout: 1})."""

    def __init__(self, answerer_factory: Callable[[], Any], num_actors: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, jobs_per_call: int = 4, max_restarts: int = 10,
                 resources: dict[str, float] | None = None):
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus} | ({"resources": dict(resources)} if resources else {})
        super().__init__(answerer_factory, num_actors, options, max_restarts)
        self.jobs_per_call = jobs_per_call

    def score(self, jobs: Sequence[ScoreJob]) -> list[tuple[RewardResult, list[str]]]:
        """(rewards, answer texts) per job, in job order; survives actor deaths (see AnswererActorPool)."""
        per_job = [job.requests() for job in jobs]
        step = self.jobs_per_call
        answers = self.answer_chunks([dedupe([r for reqs in per_job[i : i + step] for r in reqs])
                                      for i in range(0, len(jobs), step)])
        out = []
        for job, reqs in zip(jobs, per_job):
            got = [answers[r.key] for r in reqs]
            out.append((score_answers(job, [a.option for a in got]), [a.text for a in got]))
        return out


def in_process_reward_fn(answerer):
    """Rewards in this process, for the single-process loop: the same scoring the answerer actors do."""
    from tspo_ray.rollout import selected_frames

    def reward(item, draws):
        sets = tuple((tuple(i), tuple(t)) for i, t in selected_frames(item, draws))
        job = ScoreJob(item.record, item.video_path, sets)
        return score_answers(job, [a.option for a in answerer.answer(job.requests())])

    return reward
