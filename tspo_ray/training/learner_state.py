"""The learner's whole state, owned by one object for both training loops (single-process and Ray).

`LearnerState` holds the agent, its optimizer, the reference agent (KL anchor), the step, the τ schedule, the data
order and the sampling seeds, and the weights of the last `max_lag` policy versions. Batch b is always

- the question positions `positions(b)` (a seeded epoch-wise shuffle),
- sampled with the weights of version `sampling_version(b)` = max(0, b - max_lag) at τ(b), with noise seeded by
  (seed, b),
- learned at step b.

So a run is a function of its config alone, whichever loop runs it and however the Ray pipeline's calls interleave;
and a checkpoint at step s (which carries the versions s - max_lag .. s - 1 still needed by the batches in flight)
resumes to the same weights as an uninterrupted run, on either loop.
"""
from __future__ import annotations

import collections
import copy
from pathlib import Path
from typing import Sequence

import torch

from tspo_ray.config import Config
from tspo_ray.data.cursor import DataCursor
from tspo_ray.data.items import FeatureItem
from tspo_ray.method import sampling
from tspo_ray.method.agent import DEFAULT_KIND, TemporalAgent
from tspo_ray.method.kinds import agent_from_config
from tspo_ray.training.learner import learner_step
from tspo_ray.training.rollout import Group

#: checkpoint schema written by LearnerState.state_dict (bumped when the meaning of a field changes)
SCHEMA = 2


def build_agent(cfg: Config, dim: int) -> TemporalAgent:
    """A fresh agent of the configured shape, or the one agent.init_checkpoint names."""
    if cfg.agent.init_checkpoint:
        from tspo_ray.checkpoint import load_agent

        agent = load_agent(cfg.agent.init_checkpoint, window=cfg.agent.window, heads=cfg.agent.heads)
        if agent.dim != dim:
            raise ValueError(f"agent.init_checkpoint has feature dim {agent.dim}, the encoder gives {dim}")
    else:
        settings = {"dim": dim, "window": cfg.agent.window, "heads": cfg.agent.heads, "hidden": cfg.agent.hidden,
                    "query_conditioned": cfg.agent.query_conditioned, "position_scale": cfg.agent.position_scale}
        if cfg.agent.kind != DEFAULT_KIND:
            settings["kind"] = cfg.agent.kind
        settings.update(cfg.agent.options or {})
        agent = agent_from_config(settings)
    agent.anchors = cfg.policy.anchors  # validation's anchors method places as many frames as training draws
    return agent


def batch_seed(seed: int, batch_index: int) -> int:
    """Sampling noise of a batch depends only on (seed, batch), so a resumed run draws what the original drew."""
    return (seed * 1_000_003 + batch_index) % (2**63 - 1)


def cpu_state(agent: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the agent's weights (for sampling elsewhere and for checkpoints)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in agent.state_dict().items()}


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (another dataset size, another seed, or missing versions)."""


class LearnerState:
    """Agent, optimizer, reference agent, step, τ schedule, data order, RNG and recent versions, with save/load."""

    def __init__(self, cfg: Config, dim: int, num_items: int, device: torch.device | str = "cpu"):
        if num_items < 1:
            raise ValueError("no training questions")
        self.cfg, self.num_items, self.device = cfg, num_items, torch.device(device)
        torch.manual_seed(cfg.train.seed)
        self.agent = build_agent(cfg, dim).to(self.device)
        self.ref_agent = copy.deepcopy(self.agent).requires_grad_(False) if cfg.grpo.kl_coef else None
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.grpo.lr)
        self.step = 0
        self.history: list[list[str]] = []  # the question ids each step learned from
        self.best_val: float | None = None  # the best periodic validation accuracy so far (train.eval_every)
        #: CPU weights of versions step - max_lag .. step - 1: what the batches still in flight are sampled with
        self.recent: collections.OrderedDict[int, dict[str, torch.Tensor]] = collections.OrderedDict()
        self._cursor = DataCursor(num_items, cfg.train.seed)
        self._plan: list[list[int]] = []  # batch b's positions, extended on demand

    # --- the schedule of batch b -------------------------------------------------------------------------------
    @property
    def max_lag(self) -> int:
        return self.cfg.train.max_lag

    def positions(self, batch: int) -> list[int]:
        while len(self._plan) <= batch:
            self._plan.append(self._cursor.next_batch(self.cfg.train.questions_per_step))
        return self._plan[batch]

    def tau_at(self, batch: int) -> float:
        p = self.cfg.policy
        return sampling.linear_tau(batch, self.cfg.train.steps, p.tau_start, p.tau_end)

    @property
    def tau(self) -> float:
        return self.tau_at(self.step)

    def sampling_seed(self, batch: int) -> int:
        return batch_seed(self.cfg.train.seed, batch)

    def sampling_version(self, batch: int) -> int:
        return max(0, batch - self.max_lag)

    def weights_of(self, version: int) -> dict[str, torch.Tensor]:
        """CPU weights of a version the pipeline may still sample with: the current one or one of the last max_lag."""
        if version == self.step:
            return cpu_state(self.agent)
        if version not in self.recent:
            raise ResumeError(f"weights of version {version} are not kept (step {self.step}, max_lag {self.max_lag})")
        return self.recent[version]

    # --- the update ---------------------------------------------------------------------------------------------
    def update(self, items: Sequence[FeatureItem], groups: Sequence[Group]) -> dict[str, float]:
        """Learn batch `step` (its groups, answered), keep this version's weights for the batches in flight, advance."""
        from tspo_ray.training.learner import batch_to_device

        if self.max_lag:
            self.recent[self.step] = cpu_state(self.agent)
            while len(self.recent) > self.max_lag:
                self.recent.popitem(last=False)
        g = self.cfg.grpo
        items, groups = batch_to_device(items, groups, self.device)
        metrics = learner_step(
            self.agent, self.optimizer, items, groups, likelihood=self.cfg.policy.likelihood, clip_eps=g.clip_eps,
            epochs=g.epochs, current_version=self.step, filter_zero_variance=g.filter_zero_variance,
            kl_coef=g.kl_coef, ref_agent=self.ref_agent, max_grad_norm=g.max_grad_norm,
            advantage_norm=g.advantage_norm, temporal_weight=g.temporal_weight,
        )
        self.history.append([it.key for it in items])
        self.step += 1
        return metrics

    # --- checkpoints --------------------------------------------------------------------------------------------
    def data_position(self) -> dict:
        """Where the data stream stands after `step` learner steps (epoch, offset, batches consumed)."""
        cursor = DataCursor(self.num_items, self.cfg.train.seed)
        for _ in range(self.step):
            cursor.next_batch(self.cfg.train.questions_per_step)
        return cursor.state_dict() | {"batches_consumed": self.step}

    def state_dict(self) -> dict:
        return {
            "schema": SCHEMA, "agent": cpu_state(self.agent), "agent_config": self.agent.config(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "tau": self.tau,
            "data_position": self.data_position(), "history": self.history,
            "recent_versions": {str(v): w for v, w in self.recent.items()},
            "ref_agent": cpu_state(self.ref_agent) if self.ref_agent is not None else None,
            "rng": torch.get_rng_state(), "config": self.cfg.to_dict(), "best_val": self.best_val,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("schema") != SCHEMA:
            raise ResumeError(f"checkpoint schema {state.get('schema')!r}, this version reads {SCHEMA}: start a new "
                              f"run, or keep training with agent.init_checkpoint=<that checkpoint>")
        pos = state["data_position"]
        if pos.get("num_items") != self.num_items or pos.get("seed") != self.cfg.train.seed:
            raise ResumeError(f"checkpoint was trained on {pos.get('num_items')} questions with seed "
                              f"{pos.get('seed')}; this run has {self.num_items} with seed {self.cfg.train.seed}")
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])  # Adam moves its state to the parameters' device
        if self.ref_agent is not None and state.get("ref_agent") is not None:
            self.ref_agent.load_state_dict(state["ref_agent"])
        self.step, self.history = int(state["step"]), [list(h) for h in state["history"]]
        kept = {int(v): w for v, w in state.get("recent_versions", {}).items()}
        self.recent = collections.OrderedDict(sorted((v, w) for v, w in kept.items() if v >= self.step - self.max_lag))
        missing = [v for v in range(max(0, self.step - self.max_lag), self.step) if v not in self.recent]
        if missing:
            raise ResumeError(f"checkpoint at step {self.step} keeps versions {sorted(kept)}, but max_lag "
                              f"{self.max_lag} needs {missing} for the batches in flight (resume with train.max_lag="
                              f"{self.step - min(kept, default=self.step)} or less)")
        torch.set_rng_state(state["rng"])
        self.best_val = state.get("best_val")

    def save(self, directory: str | Path) -> Path:
        from tspo_ray.checkpoint import save_checkpoint

        return save_checkpoint(directory, self.step, self.state_dict(), keep=self.cfg.train.keep_checkpoints)

    def load(self, directory: str | Path) -> None:
        from tspo_ray.checkpoint import load_checkpoint

        self.load_state_dict(load_checkpoint(directory))

    def due_for_checkpoint(self) -> bool:
        return self.step % self.cfg.train.checkpoint_every == 0 or self.step == self.cfg.train.steps

    def due_for_validation(self) -> bool:
        every = self.cfg.train.eval_every
        return bool(every) and (self.step % every == 0 or self.step == self.cfg.train.steps)

    def record_validation(self, accuracy: float, directory: str | Path) -> bool:
        """Checkpoint this step with its validation accuracy; best.json follows the best so far (True: a new best).
        Ties keep the earlier checkpoint."""
        from tspo_ray.checkpoint import mark_best

        is_best = self.best_val is None or accuracy > self.best_val
        if is_best:
            self.best_val = accuracy
        path = self.save(directory)
        if is_best:
            mark_best(directory, path, accuracy)
        return is_best

    def checkpoint_after_step(self, directory: str | Path, validate) -> dict[str, float]:
        """After a step: validate (`validate()` -> {"accuracy": ..., "family/<name>": ...}; None: no validation
        items) and checkpoint when due; the metrics to log (val/accuracy, val/family/<name>, ...)."""
        if validate is not None and self.due_for_validation():
            scores = validate()
            best = self.record_validation(scores["accuracy"], directory)
            return {**{f"val/{k}": v for k, v in scores.items()}, "val/best_accuracy": float(self.best_val),
                    "val/new_best": float(best)}
        if self.due_for_checkpoint():
            self.save(directory)
        return {}
