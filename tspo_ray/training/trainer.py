"""The single-process TSPO loop: sample G sets -> rewards -> advantages -> clipped update epochs.

This is the loop the Ray job distributes (docs/design.md: the single-process loop first, then the Ray shells around
it). It runs anywhere without Ray, given precomputed features and a reward function. Both loops keep their state in
one `LearnerState`, so they run the same schedule (batch b sampled with version max(0, b - max_lag)) and write the
same checkpoints: a run started here resumes on Ray and the other way round.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from tspo_ray.config import Config
from tspo_ray.data import haystack
from tspo_ray.data.items import FeatureItem
from tspo_ray.method import sampling
from tspo_ray.threads import use_torch_threads
from tspo_ray.training import scoring
from tspo_ray.training.learner_state import LearnerState, build_agent  # noqa: F401  (build_agent: the loops' one agent factory)
from tspo_ray.training.rollout import RewardFn, sample_groups


def sample_batch(agent, items: Sequence[FeatureItem], positions: Sequence[int], cfg: Config, tau: float, seed: int,
                 version: int) -> tuple[list[FeatureItem], list]:
    """Batch `positions` as both loops draw it: needle questions over haystacks (haystack.probability) built from the
    batch seed, then G sets per question sampled with `agent` (version `version`) at tau, noise seeded by seed."""
    batch = [items[i] for i in positions]
    if cfg.haystack.probability:  # needle questions asked over haystacks of several videos' chunks
        batch = haystack.haystack_items(batch, items, seed, **haystack.options(cfg.haystack))
    p = cfg.policy
    groups = sample_groups(agent, batch, p.group_size, p.num_frames, tau, p.likelihood, version,
                           torch.Generator().manual_seed(seed), cfg.haystack.num_frames,
                           p.anchors if p.sampling == "anchors" else None)
    return batch, groups


class LocalTrainer:
    """A thin shell over LearnerState: samples each batch with the version the schedule names, rewards, updates."""

    def __init__(self, items: Sequence[FeatureItem], reward_fn: RewardFn, cfg: Config,
                 log_fn: Callable[[int, dict], None] | None = None):
        if not items:
            raise ValueError("no training items")
        self.items, self.reward_fn, self.cfg, self.log_fn = list(items), reward_fn, cfg, log_fn
        self.state = LearnerState(cfg, items[0].frame_features.shape[-1], len(self.items))
        self._sampler = None  # a second agent that holds an older version's weights when max_lag > 0
        #: seconds the last step spent logging its metrics and checkpointing (logged with the next step's)
        self.bookkeeping_s = 0.0

    @property
    def agent(self) -> torch.nn.Module:
        return self.state.agent

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def tau(self) -> float:
        return self.state.tau

    def _sampling_agent(self, version: int) -> torch.nn.Module:
        if version == self.state.step:
            return self.state.agent
        if self._sampler is None:
            from tspo_ray.method.kinds import agent_from_config

            self._sampler = agent_from_config(self.state.agent.config()).eval()
        self._sampler.load_state_dict(self.state.weights_of(version))
        return self._sampler

    def train_step(self) -> dict[str, float]:
        b = self.state.step
        version = self.state.sampling_version(b)
        t0 = time.perf_counter()
        batch, groups = sample_batch(self._sampling_agent(version), self.items, self.state.positions(b), self.cfg,
                                     self.state.tau_at(b), self.state.sampling_seed(b), version)
        t1 = time.perf_counter()
        groups = [grp.with_rewards(self.reward_fn(item, grp.shown)) for item, grp in zip(batch, groups)]
        t2 = time.perf_counter()
        metrics = self.state.update(batch, groups)
        # where a step's time goes (benchmarks/training_loop.py sets these beside the Ray loop's)
        metrics.update(time_sample_s=t1 - t0, time_answer_s=t2 - t1, time_learn_s=time.perf_counter() - t2,
                       time_bookkeeping_s=self.bookkeeping_s)
        t3 = time.perf_counter()
        if self.log_fn:
            self.log_fn(self.state.step, metrics)
        self.bookkeeping_s = time.perf_counter() - t3
        return metrics

    def run(self, steps: int | None = None) -> list[dict[str, float]]:
        steps = self.cfg.train.steps - self.state.step if steps is None else steps
        return [self.train_step() for _ in range(steps)]

    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state)


def train_single_process(cfg: Config, items: Sequence[FeatureItem], tracker=None, resume: bool = False,
                         stop_after: int | None = None, val_items: Sequence[FeatureItem] = (),
                         progress: bool = True, answerer=None) -> LocalTrainer:
    """The whole single-process run: rewards (and periodic validation on `val_items`) from the configured answerer
    in this process, checkpoints in train.output_dir/checkpoints (resumed from with `resume`), metrics to the
    MLflow `tracker`. Runs with train.torch_threads torch threads."""
    before = use_torch_threads(cfg.train.torch_threads)
    try:
        return _train_single_process(cfg, items, tracker, resume, stop_after, val_items, progress, answerer)
    finally:
        torch.set_num_threads(before)


def _train_single_process(cfg, items, tracker, resume, stop_after, val_items, progress, answerer) -> LocalTrainer:
    from pathlib import Path

    from tqdm import tqdm

    from tspo_ray.checkpoint import latest_checkpoint
    from tspo_ray.evaluation.accuracy import validation_accuracy

    if answerer is None:
        from tspo_ray.answerers import build_answerer, settings_for

        answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))
    log = (lambda step, m: tracker.log_metrics(m, step)) if tracker else None
    trainer = LocalTrainer(items, scoring.reward_fn(answerer), cfg, log)  # plain and haystack items alike
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    if resume and latest_checkpoint(ckpt_dir) is not None:
        trainer.state.load(ckpt_dir)
    validate = lambda: validation_accuracy(val_items, trainer.agent, cfg.eval.num_frames, answerer,  # noqa: E731
                                           cfg.train.eval_selector)
    for _ in tqdm(range(trainer.step, cfg.train.steps), desc="train (one process)", initial=trainer.step,
                  total=cfg.train.steps, disable=not progress):
        trainer.train_step()
        t0 = time.perf_counter()
        val_metrics = trainer.state.checkpoint_after_step(ckpt_dir, validate if val_items else None)
        if val_metrics and log:
            log(trainer.step, val_metrics)
        trainer.bookkeeping_s += time.perf_counter() - t0
        if stop_after and trainer.step >= stop_after:
            break
    return trainer


@torch.no_grad()
def expected_reward(agent: torch.nn.Module, items: Sequence[FeatureItem], reward_fn: RewardFn, num_frames: int,
                    tau: float, samples: int = 64, seed: int = 0) -> float:
    """Monte-Carlo estimate of E[reward] under the sampling policy at temperature tau."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for item in items:
        logits = agent(item.frame_features, item.text_feature) / tau
        draws = sampling.gumbel_topk(logits, num_frames, samples, g)
        total += float(reward_fn(item, draws).rewards.mean())
    return total / len(items)
