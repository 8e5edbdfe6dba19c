"""From sampled keyframe sets to rewards: the answerer's job for a group, and its rewards once answered.

The requests carry only what a model may see; the rewards are computed by whoever holds the records with their
labels (the single-process loop, or the answerer pool's caller). Requests are keyed by (question id, set, frame
indices), so a resent chunk never makes a group lost or counted twice.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.data.haystack import CLIP_SPACING_S, candidate_videos, temporal_mask_reward
from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord
from tspo_ray.method.rewards import RewardResult, answer_reward, temporal_reward, total_reward
from tspo_ray.training.rollout import selected_frames


@dataclass(frozen=True)
class ScoreJob:
    """The G keyframe sets of one question, as native frame indices and timestamps (temporal order).

    A needle-in-a-haystack job (score_job below) also names each frame's file, gives the sets' R_T
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


def score_job(item: FeatureItem, draws: torch.Tensor) -> ScoreJob:
    """The ScoreJob of an item's G sampled sets (draws [G, k], candidate positions). A plain item
    gives the job the rollout coordinator builds; a haystack item's job names each frame's file, places the frames
    on the haystack clip's times and carries R_T from the target mask."""
    if item.target_mask is None:
        sets = tuple((tuple(i), tuple(t)) for i, t in selected_frames(item, draws))
        return ScoreJob(item.record, item.video_path, sets)
    videos = candidate_videos(item)
    sets, files, r_t = [], [], []
    for row in draws.tolist():
        pos = sorted(int(p) for p in row)
        sets.append((tuple(int(item.frame_indices[p]) for p in pos), tuple(p * CLIP_SPACING_S for p in pos)))
        files.append(tuple(videos[p] for p in pos))
        r_t.append(temporal_mask_reward(item.target_mask, pos))
    return ScoreJob(item.record, item.video_path, tuple(sets), frame_videos=tuple(files), r_temporal=tuple(r_t),
                    duration_s=len(item.frame_indices) * CLIP_SPACING_S)


def reward_fn(answerer):
    """The single-process loop's reward function over any item, answered in this process: R_A + 1 / R_A + R_T as usual, and R_A + R_T with
    R_T from the target mask for haystack items (the same scoring the answerer actors do)."""
    def reward(item: FeatureItem, draws: torch.Tensor) -> RewardResult:
        job = score_job(item, draws)
        return score_answers(job, [a.option for a in answerer.answer(job.requests())])

    return reward
