"""The training pool: sampled keyframe sets in, rewards out, on top of the generic answerer actor pool.

Scoring is answering plus `score_answers`: the actors (AnswererActorPool's, which exit when their engine dies and
are replaced, their unfinished chunks resent) answer requests that carry only what a model may see; the rewards are
computed here, by the pool's caller, which holds the records with their labels. Requests are keyed by
(question id, set, frame indices), so a resent chunk never makes a group lost or counted twice.
"""
from __future__ import annotations

import hashlib
import zlib
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
    """The G keyframe sets of one question, as native frame indices and timestamps (temporal order).

    A needle-in-a-haystack job (tspo_ray.haystack.score_job) also names each frame's file, gives the sets' R_T
    (the target mask's share) and the clip's duration; its timestamps are the clip's own times."""

    record: QARecord
    video_path: str
    sets: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]
    #: per set, the file of each frame (None: every frame from video_path)
    frame_videos: tuple[tuple[str, ...], ...] | None = None
    #: per set, R_T given by the caller; the item then scores as a needle item, R_A + R_T (None: R_T from spans)
    r_temporal: tuple[float, ...] | None = None
    #: the duration the answerer is told (None: the record's)
    duration_s: float | None = None

    def requests(self) -> list[AnswerRequest]:
        out = []
        for g, (idx, ts) in enumerate(self.sets):
            videos = None if self.frame_videos is None else self.frame_videos[g]
            frames = ",".join(map(str, idx))
            if videos is not None:  # the same indices in other files are other frames: the key names the files
                frames = hashlib.sha1("|".join(f"{v}:{i}" for v, i in zip(videos, idx)).encode()).hexdigest()[:16]
            out.append(AnswerRequest.for_record(self.record, self.video_path, idx, ts, f"{g}:{frames}", videos,
                                                self.duration_s))
        return out


def score_answers(job: ScoreJob, options: Sequence[str | None]) -> RewardResult:
    """Rewards of G answered sets: R_A from the parsed options, R_T from the sets' timestamps (or the job's own)."""
    r = job.record
    r_a = torch.tensor([answer_reward(o, r.answer) for o in options])
    kind = "needle" if job.r_temporal is not None else r.type
    if job.r_temporal is not None:
        r_t = torch.tensor([float(t) for t in job.r_temporal])
    else:
        r_t = torch.tensor([temporal_reward(ts, r.target_spans) if r.type == "needle" else 0.0 for _, ts in job.sets])
    total = torch.tensor([total_reward(kind, float(a), float(t)) for a, t in zip(r_a, r_t)])
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
        # Each video's jobs go to one actor (by a stable hash of the path), so every actor's frame cache holds its
        # own share of the videos instead of every actor decoding every video once.
        by_slot: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            by_slot.setdefault(zlib.crc32(job.video_path.encode()) % len(self.actors), []).append(i)
        chunks, slots = [], []
        for slot, idx in sorted(by_slot.items()):
            for start in range(0, len(idx), self.jobs_per_call):
                chunks.append(dedupe([r for i in idx[start : start + self.jobs_per_call] for r in per_job[i]]))
                slots.append(slot)
        answers = self.answer_chunks(chunks, slots)
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
