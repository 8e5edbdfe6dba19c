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
from tspo_ray.method import sampling, selection_methods, sequential
from tspo_ray.method.rewards import RewardResult
from tspo_ray.method.selection import clip_scores


@dataclass
class Group:
    key: str
    draws: torch.Tensor  # long [G, m]: candidate positions in draw order (the sampled part of each set)
    logp_old: torch.Tensor  # [G, m]: likelihood terms under the sampling policy
    tau: float
    version: int
    rewards: torch.Tensor | None = None
    r_answer: torch.Tensor | None = None
    r_temporal: torch.Tensor | None = None
    parse_failures: int = 0
    extra: dict = field(default_factory=dict)
    sets: torch.Tensor | None = None  # long [G, k]: the frames each set shows, when they are more than the draws

    @property
    def shown(self) -> torch.Tensor:
        """The candidate positions the answerer sees for each set: the draws, or the sets built around them."""
        return self.draws if self.sets is None else self.sets

    def with_rewards(self, result: RewardResult) -> "Group":
        return replace(self, rewards=result.rewards.float(), r_answer=result.r_answer.float(),
                       r_temporal=result.r_temporal.float(), parse_failures=result.parse_failures)


RewardFn = Callable[[FeatureItem, torch.Tensor], RewardResult]


@torch.no_grad()
def sample_group(agent: torch.nn.Module, item: FeatureItem, group_size: int, num_frames: int, tau: float,
                 likelihood: sampling.LikelihoodKind, version: int, generator: torch.Generator | None = None,
                 anchors: int | None = None) -> Group:
    """Draw G sets for one question and store their log-likelihood under the sampling policy.

    A set-aware agent (one with set_policy, agent.kind=scan) draws each set from its own sequential policy
    (tspo_ray.method.sequential) with that policy's exact likelihood, whatever `likelihood` says.
    anchors None: each set is a Gumbel-top-k draw of num_frames frames (the paper's sampling). anchors m: the agent
    draws m frames (Gumbel-top-m, exact Plackett-Luce likelihood of that draw) and each set is anchored_set
    around them, the same set the anchors inference method builds around the agent's best m frames; the rest of a
    set depends on the features alone, so the draw's likelihood is the set's.
    """
    if anchors is None and hasattr(agent, "set_policy"):  # a set-aware kind: its own sequential policy
        scores, kernel, penalty = agent.set_policy(item.frame_features, item.text_feature)
        draws = sequential.sequential_sample(scores, kernel, penalty, tau, num_frames, group_size, generator)
        return Group(item.key, draws, sequential.sequential_logprob(scores, kernel, penalty, tau, draws), tau, version)
    logits = agent(item.frame_features, item.text_feature) / tau
    if anchors is None:
        draws = sampling.gumbel_topk(logits, num_frames, group_size, generator)
        return Group(item.key, draws, sampling.set_logprob(logits, draws, likelihood), tau, version)
    draws = sampling.gumbel_topk(logits, min(anchors, num_frames), group_size, generator)
    base = clip_cosines(item)
    sets = torch.stack([selection_methods.anchored_set(row, base, num_frames) for row in draws.tolist()])
    return Group(item.key, draws, sampling.set_logprob(logits, draws, likelihood), tau, version, sets=sets)


def clip_cosines(item: FeatureItem) -> torch.Tensor:
    """cos(F_f, F_t) per candidate, float32: the base the anchors method fills a set by."""
    return clip_scores(item.frame_features.float(), item.text_feature.float())


def selected_frames(item: FeatureItem, draws: torch.Tensor) -> list[tuple[list[int], list[float]]]:
    """Per set: (native frame indices, timestamps) in temporal order, as an answerer needs them."""
    out = []
    for row in draws.tolist():
        pos = sorted(row)
        out.append(([int(item.frame_indices[p]) for p in pos], [float(item.timestamps_s[p]) for p in pos]))
    return out


def sample_groups(agent, items: Sequence[FeatureItem], group_size: int, num_frames: int, tau: float,
                  likelihood: sampling.LikelihoodKind, version: int, generator=None,
                  haystack_frames: int | None = None, anchors: int | None = None) -> list[Group]:
    """One group per item; haystack items (those with a target mask) draw haystack_frames sets when it is set, and
    always by plain Gumbel-top-k (their reward is the target mask, no events to place context around).
    A set-aware agent draws in batches: its policies for every item that draws from it in one pass, then the sets
    of all videos of one length at once (sequential.sequential_sample_batch), with each item's noise taken from the
    generator in item order, so the draws are those of one item at a time."""
    batched = hasattr(agent, "set_policies")
    drawn = [i for i, it in enumerate(items) if batched and (it.target_mask is not None or anchors is None)]
    drawn_set = set(drawn)
    groups: list[Group | None] = [None] * len(items)
    uniforms: dict[int, torch.Tensor] = {}
    for i, it in enumerate(items):
        k = haystack_frames or num_frames if it.target_mask is not None else num_frames
        if i in drawn_set:
            T = it.frame_features.shape[0]
            uniforms[i] = sequential.draw_uniforms(sampling.effective_k(T, k), group_size, T, generator,
                                                   it.frame_features.device)
        else:  # haystack items are never anchored
            groups[i] = sample_group(agent, it, group_size, k, tau, likelihood, version, generator,
                                     None if it.target_mask is not None else anchors)
    if drawn:
        with torch.no_grad():
            parts, penalty = agent.set_policies([items[i].frame_features for i in drawn],
                                                [items[i].text_feature for i in drawn])
            policy = dict(zip(drawn, parts))  # item -> (S, K)
            for members in same_shape(drawn, {i: tuple(u.shape) for i, u in uniforms.items()}).values():
                scores = torch.stack([policy[i][0] for i in members])
                kernel = type(parts[0][1]).stack([policy[i][1] for i in members])
                draws = sequential.sequential_sample_batch(scores, kernel, penalty, tau,
                                                           torch.stack([uniforms[i] for i in members]))
                logp = sequential.sequential_logprob(scores[:, None, None, :], kernel, penalty, tau, draws)
                for row, i in enumerate(members):
                    # copies, not views: a view pickles its whole storage, so each group sent from the rollout
                    # coordinator carried every group's draws (2.3 MB a batch of 64 instead of 40 KB)
                    groups[i] = Group(items[i].key, draws[row].clone(), logp[row].clone(), tau, version)
    return groups


def same_shape(members: list[int], shapes: dict[int, tuple]) -> dict[tuple, list[int]]:
    """members grouped by their shape, in order: what can be stacked into one batch."""
    out: dict[tuple, list[int]] = {}
    for i in members:
        out.setdefault(shapes[i], []).append(i)
    return out

