"""Rollouts: G keyframe sets per question drawn by the agent at policy version v, with their old log-probs.

A group is the unit that travels from the rollout side to the learner: it carries the ordered draws (native
candidate positions), the log-likelihood terms under the sampling policy, the temperature used, the policy
version, and (once answered) the rewards.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from tspo_ray import policy
from tspo_ray.data.records import QARecord


@dataclass
class FeatureItem:
    """One question with its precomputed features: what the agent and the reward function need."""

    record: QARecord
    frame_features: torch.Tensor  # [T, D] CLIP features of the candidates
    text_feature: torch.Tensor  # [D] CLIP feature of the question stem
    frame_indices: np.ndarray  # [T] native frame index of each candidate
    timestamps_s: np.ndarray  # [T]
    video_path: str  # resolved path of the video file
    #: [T] the file of each candidate, for candidates drawn from several files (a needle-in-a-haystack item built
    #: by tspo_ray.haystack); frame_indices and timestamps_s are then native to each candidate's own file.
    #: None: every candidate is a frame of video_path.
    frame_videos: tuple[str, ...] | None = None
    #: [T] bool, True where a candidate is a frame of the question's own video (haystack items: R_T is the
    #: selection's masked fraction); None: not a haystack item
    target_mask: np.ndarray | None = None

    @property
    def key(self) -> str:
        return self.record.id


@dataclass(frozen=True)
class RewardResult:
    rewards: torch.Tensor  # [G] total reward of each set
    r_answer: torch.Tensor  # [G]
    r_temporal: torch.Tensor  # [G]
    parse_failures: int = 0


@dataclass
class Group:
    key: str
    draws: torch.Tensor  # long [G, k]: candidate positions in draw order
    logp_old: torch.Tensor  # [G, m]: likelihood terms under the sampling policy
    tau: float
    version: int
    rewards: torch.Tensor | None = None
    r_answer: torch.Tensor | None = None
    r_temporal: torch.Tensor | None = None
    parse_failures: int = 0
    extra: dict = field(default_factory=dict)

    def with_rewards(self, result: RewardResult) -> "Group":
        return replace(self, rewards=result.rewards.float(), r_answer=result.r_answer.float(),
                       r_temporal=result.r_temporal.float(), parse_failures=result.parse_failures)


RewardFn = Callable[[FeatureItem, torch.Tensor], RewardResult]


@torch.no_grad()
def sample_group(agent: torch.nn.Module, item: FeatureItem, group_size: int, num_frames: int, tau: float,
                 likelihood: policy.LikelihoodKind, version: int, generator: torch.Generator | None = None) -> Group:
    """Draw G Gumbel-top-k sets for one question and store their log-likelihood under the sampling policy."""
    logits = agent(item.frame_features, item.text_feature) / tau
    draws = policy.gumbel_topk(logits, num_frames, group_size, generator)
    logp = policy.set_logprob(logits, draws, likelihood)
    return Group(item.key, draws, logp, tau, version)


def selected_frames(item: FeatureItem, draws: torch.Tensor) -> list[tuple[list[int], list[float]]]:
    """Per set: (native frame indices, timestamps) in temporal order, as an answerer needs them."""
    out = []
    for row in draws.tolist():
        pos = sorted(row)
        out.append(([int(item.frame_indices[p]) for p in pos], [float(item.timestamps_s[p]) for p in pos]))
    return out


def sample_groups(agent, items: Sequence[FeatureItem], group_size: int, num_frames: int, tau: float,
                  likelihood: policy.LikelihoodKind, version: int, generator=None,
                  haystack_frames: int | None = None) -> list[Group]:
    """One group per item; haystack items (those with a target mask) draw haystack_frames sets when it is set."""
    k = lambda it: haystack_frames if it.target_mask is not None and haystack_frames else num_frames  # noqa: E731
    return [sample_group(agent, it, group_size, k(it), tau, likelihood, version, generator) for it in items]
