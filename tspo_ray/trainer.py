"""The single-process TSPO loop: sample G sets -> rewards -> advantages -> clipped update epochs.

This is the loop the Ray job distributes (docs/design.md: the single-process loop first, then the Ray shells around
it). It runs anywhere without Ray, given precomputed features and a reward function.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch

from tspo_ray import policy
from tspo_ray.agent import TemporalAgent
from tspo_ray.config import Config
from tspo_ray.data.cursor import DataCursor
from tspo_ray.learner import learner_step
from tspo_ray.rollout import FeatureItem, RewardFn, sample_groups


def build_agent(cfg: Config, dim: int) -> TemporalAgent:
    if cfg.agent.init_checkpoint:
        from tspo_ray.checkpoint import load_agent

        agent = load_agent(cfg.agent.init_checkpoint, window=cfg.agent.window, heads=cfg.agent.heads)
        if agent.dim != dim:
            raise ValueError(f"agent.init_checkpoint has feature dim {agent.dim}, the encoder gives {dim}")
        return agent
    return TemporalAgent(dim, window=cfg.agent.window, heads=cfg.agent.heads, hidden=cfg.agent.hidden)


class LocalTrainer:
    """Owns the agent, optimizer, data cursor and sampling RNG; `state_dict` captures all of them for resume."""

    def __init__(self, items: Sequence[FeatureItem], reward_fn: RewardFn, cfg: Config,
                 log_fn: Callable[[int, dict], None] | None = None):
        if not items:
            raise ValueError("no training items")
        torch.manual_seed(cfg.train.seed)
        self.items, self.reward_fn, self.cfg, self.log_fn = list(items), reward_fn, cfg, log_fn
        self.agent = build_agent(cfg, items[0].frame_features.shape[-1])
        self.ref_agent = copy.deepcopy(self.agent).requires_grad_(False) if cfg.grpo.kl_coef else None
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.grpo.lr)
        self.cursor = DataCursor(len(self.items), cfg.train.seed)
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 1)
        self.step = 0

    @property
    def tau(self) -> float:
        p = self.cfg.policy
        return policy.linear_tau(self.step, self.cfg.train.steps, p.tau_start, p.tau_end)

    def train_step(self) -> dict[str, float]:
        p, g = self.cfg.policy, self.cfg.grpo
        batch = [self.items[i] for i in self.cursor.next_batch(self.cfg.train.questions_per_step)]
        tau = self.tau
        groups = sample_groups(self.agent, batch, p.group_size, p.num_frames, tau, p.likelihood, self.step,
                               self.generator)
        groups = [grp.with_rewards(self.reward_fn(item, grp.draws)) for item, grp in zip(batch, groups)]
        metrics = learner_step(
            self.agent, self.optimizer, batch, groups, tau=tau, likelihood=p.likelihood, clip_eps=g.clip_eps,
            epochs=g.epochs, current_version=self.step, filter_zero_variance=g.filter_zero_variance,
            kl_coef=g.kl_coef, ref_agent=self.ref_agent, max_grad_norm=g.max_grad_norm,
        )
        self.step += 1
        if self.log_fn:
            self.log_fn(self.step, metrics)
        return metrics

    def run(self, steps: int | None = None) -> list[dict[str, float]]:
        steps = self.cfg.train.steps if steps is None else steps
        return [self.train_step() for _ in range(steps)]

    def state_dict(self) -> dict:
        return {
            "agent": self.agent.state_dict(), "agent_config": self.agent.config(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "cursor": self.cursor.state_dict(),
            "sampler_rng": self.generator.get_state(), "tau": self.tau,
        }

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.cursor = DataCursor.from_state_dict(state["cursor"])
        self.generator.set_state(state["sampler_rng"])


@torch.no_grad()
def expected_reward(agent: torch.nn.Module, items: Sequence[FeatureItem], reward_fn: RewardFn, num_frames: int,
                    tau: float, samples: int = 64, seed: int = 0) -> float:
    """Monte-Carlo estimate of E[reward] under the sampling policy at temperature tau."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for item in items:
        logits = agent(item.frame_features, item.text_feature) / tau
        draws = policy.gumbel_topk(logits, num_frames, samples, g)
        total += float(reward_fn(item, draws).rewards.mean())
    return total / len(items)
