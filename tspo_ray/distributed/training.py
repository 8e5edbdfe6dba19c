"""Decoupled TSPO training on Ray: a rollout coordinator actor and a Ray Train learner loop.

The learner (a TorchTrainer worker) owns the agent. It keeps up to `max_lag + 1` rollout batches in flight: batch b
is sampled by the coordinator with the weights of version v (the object store carries the ~state dict), answered by
the answerer pool, and returned as groups stamped with v. The learner updates on batch b at version b, so every
group's staleness b - v is at most max_lag (0 = synchronous: sample, then learn). The clipped importance ratio
against the stored old log-probs keeps the stale groups' update correct.
"""
from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import ray
import torch

from tspo_ray import policy
from tspo_ray.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tspo_ray.config import Config, _build, validate
from tspo_ray.data.cursor import DataCursor
from tspo_ray.distributed.answerer_pool import AnswererPool, ScoreJob
from tspo_ray.learner import batch_to_device, learner_step
from tspo_ray.rollout import FeatureItem, sample_group, selected_frames
from tspo_ray.trainer import build_agent


def batch_seed(seed: int, batch_index: int) -> int:
    """Sampling noise of a batch depends only on (seed, batch), so a resumed run draws what the original drew."""
    return (seed * 1_000_003 + batch_index) % (2**63 - 1)


def batch_plan(num_items: int, seed: int, batch_size: int, steps: int) -> list[list[int]]:
    """The item positions of every learner step: the whole data order of the run, fixed by the seed."""
    cursor = DataCursor(num_items, seed)
    return [cursor.next_batch(batch_size) for _ in range(steps)]


def data_position(num_items: int, cfg: Config, steps_done: int) -> dict:
    """Where the data stream stands after `steps_done` learner steps (epoch, offset, batches consumed)."""
    cursor = DataCursor(num_items, cfg.train.seed)
    for _ in range(steps_done):
        cursor.next_batch(cfg.train.questions_per_step)
    return cursor.state_dict() | {"batches_consumed": steps_done}


class RolloutCoordinator:
    """Ray actor: samples G sets per question with the given weights and has the answerer pool score them."""

    def __init__(self, items: Sequence[FeatureItem], agent_config: dict, pool_kwargs: dict, group_size: int,
                 num_frames: int, likelihood: str):
        from tspo_ray.agent import TemporalAgent

        self.items = list(items)
        self.agent = TemporalAgent(**agent_config).eval()
        self.pool = AnswererPool(**pool_kwargs)
        self.group_size, self.num_frames, self.likelihood = group_size, num_frames, likelihood
        self.loaded_version = -1

    def rollout(self, positions: list[int], version: int, weights: dict, tau: float, seed: int):
        t0 = time.perf_counter()
        if version != self.loaded_version:
            self.agent.load_state_dict(weights)
            self.loaded_version = version
        gen = torch.Generator().manual_seed(seed)
        batch = [self.items[p] for p in positions]
        groups = [sample_group(self.agent, it, self.group_size, self.num_frames, tau, self.likelihood, version, gen)
                  for it in batch]
        jobs = [ScoreJob(it.record, it.video_path, tuple((tuple(i), tuple(t)) for i, t in selected_frames(it, g.draws)))
                for it, g in zip(batch, groups)]
        scored = self.pool.score(jobs)
        groups = [g.with_rewards(result) for g, (result, _texts) in zip(groups, scored)]
        return {"items": batch, "groups": groups, "seconds": time.perf_counter() - t0,
                "pool_restarts": self.pool.restarts}

    def kill_answerer(self, slot: int = 0) -> int:
        """Kill one answerer actor (used by fault-tolerance tests); the pool replaces it on its next use."""
        ray.kill(self.pool.actors[slot])
        return slot


def learner_device(cfg: Config) -> torch.device:
    """The agent's device in the learner: the GPU Ray Train assigned to this worker when train.learner_device is
    cuda (ScalingConfig use_gpu, see placement.learner_scaling), else the CPU."""
    if cfg.train.learner_device != "cuda":
        return torch.device("cpu")
    import ray.train.torch

    device = ray.train.torch.get_device()
    if device.type != "cuda":
        raise RuntimeError(f"train.learner_device is cuda but Ray Train gave the learner {device} (no GPU visible)")
    return device


def cpu_state(agent: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the agent's weights (for the rollout coordinator and checkpoints)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in agent.state_dict().items()}


def learner_loop(config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker: the TSPO learner, driving the rollout pipeline."""
    import ray.train

    cfg = validate(_build(Config, config["cfg"], ""))
    coordinator = config["coordinator"]
    num_items, dim = config["num_items"], config["dim"]
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    stop_after = config.get("stop_after_steps")  # simulates an interruption in tests

    torch.manual_seed(cfg.train.seed)
    device = learner_device(cfg)
    agent = build_agent(cfg, dim).to(device)
    ref_agent = None
    if cfg.grpo.kl_coef:
        import copy

        ref_agent = copy.deepcopy(agent).requires_grad_(False)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.grpo.lr)
    start, history = 0, []  # history: the question ids of every step so far (what each step learned from)
    if config.get("resume") and latest_checkpoint(ckpt_dir) is not None:
        state = load_checkpoint(ckpt_dir)
        agent.load_state_dict(state["agent"])
        optimizer.load_state_dict(state["optimizer"])  # Adam moves its state to the parameters' device
        start, history = state["step"], state["history"]
    plan = batch_plan(num_items, cfg.train.seed, cfg.train.questions_per_step, cfg.train.steps)
    p, g = cfg.policy, cfg.grpo
    tau_of = lambda s: policy.linear_tau(s, cfg.train.steps, p.tau_start, p.tau_end)

    tracker = None
    if config.get("mlflow_run_id"):
        from tspo_ray.tracking import RunLogger

        tracker = RunLogger.attach(config["mlflow_tracking_uri"], config["mlflow_run_id"])

    # Ray Train logs every report whole (one long line per step); a short progress line every few steps instead.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)  # that module names its logger by file
    progress_every = max(1, cfg.train.steps // 30)
    t_start = time.perf_counter()

    in_flight: collections.deque = collections.deque()
    next_batch, step = start, start
    while step < cfg.train.steps:
        # Top up the pipeline with the current weights: batches up to step + max_lag.
        while next_batch < cfg.train.steps and next_batch <= step + cfg.train.max_lag:
            weights = ray.put(cpu_state(agent))  # the coordinator samples on CPU
            fut = coordinator.rollout.remote(plan[next_batch], step, weights, tau_of(next_batch),
                                             batch_seed(cfg.train.seed, next_batch))
            in_flight.append((next_batch, fut))
            next_batch += 1
        batch_index, fut = in_flight.popleft()
        t_wait = time.perf_counter()
        out = ray.get(fut)
        waited = time.perf_counter() - t_wait
        t0 = time.perf_counter()
        items, groups = batch_to_device(out["items"], out["groups"], device)
        metrics = learner_step(
            agent, optimizer, items, groups, tau=tau_of(step), likelihood=p.likelihood,
            clip_eps=g.clip_eps, epochs=g.epochs, current_version=step, filter_zero_variance=g.filter_zero_variance,
            kl_coef=g.kl_coef, ref_agent=ref_agent, max_grad_norm=g.max_grad_norm,
        )
        learn_s = time.perf_counter() - t0
        step += 1
        history.append([it.key for it in out["items"]])
        n = len(out["groups"])
        metrics.update(
            rollout_groups_per_s=n / max(out["seconds"], 1e-9), learner_groups_per_s=n / max(learn_s, 1e-9),
            learner_wait_s=waited, answerer_restarts=float(out["pool_restarts"]), step=float(step),
            batch_index=float(batch_index),
        )
        if tracker:
            tracker.log_metrics(metrics, step)
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            save_checkpoint(ckpt_dir, step, {
                "agent": cpu_state(agent), "agent_config": agent.config(), "optimizer": optimizer.state_dict(),
                "tau": tau_of(step), "data_position": data_position(num_items, cfg, step),
                "rng": torch.get_rng_state(), "config": cfg.to_dict(), "history": history,
            }, keep=cfg.train.keep_checkpoints)
        ray.train.report({k: float(v) for k, v in metrics.items()})
        if step % progress_every == 0 or step == cfg.train.steps:
            print(f"step {step}/{cfg.train.steps}  reward {metrics['reward']:.3f}  accuracy {metrics['accuracy']:.3f}  "
                  f"R_T {metrics['r_temporal']:.3f}  tau {metrics['tau']:.3f}  "
                  f"zero-var {metrics['zero_variance_fraction']:.2f}  staleness {metrics['staleness']:.1f}  "
                  f"{(step - start) / (time.perf_counter() - t_start):.2f} steps/s", flush=True)
        if stop_after is not None and step >= stop_after:
            break
