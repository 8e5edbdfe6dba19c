"""Rollouts: G keyframe sets per question drawn by the agent at policy version v, with their old log-probs.

A group is the unit that travels from the rollout side to the learner: it carries the ordered draws (native
candidate positions), the log-likelihood terms under the sampling policy, the temperature used, the policy
version, and (once answered) the rewards.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from tspo_ray.data.items import FeatureItem
from tspo_ray.method import policy
from tspo_ray.method.rewards import RewardResult


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
