"""Decoupled TSPO training on Ray: a rollout coordinator actor and a Ray Train learner loop.

The learner (a TorchTrainer worker) owns the LearnerState. It keeps up to `max_lag + 1` rollout batches in flight:
batch b is sampled by the coordinator with the weights of version max(0, b - max_lag) (the object store carries the
state dict, put once per version), answered by the answerer pool, and returned as groups stamped with that version.
The learner updates on batch b at step b, so every group's staleness is at most max_lag (0 = synchronous: sample,
then learn). The clipped importance ratio against the stored old log-probs keeps the stale groups' update correct.
The schedule is the single-process loop's (tspo_ray.training.trainer), so both give the same weights for the same config.
"""
from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import ray
import torch

from tspo_ray.checkpoint import latest_checkpoint
from tspo_ray.config import Config, _build, validate
from tspo_ray.data.items import FeatureItem
from tspo_ray.distributed.answerer_pool import AnswererPool
from tspo_ray.training import scoring
from tspo_ray.training.learner_state import LearnerState
from tspo_ray.training.trainer import sample_batch


class RolloutCoordinator:
    """Ray actor: samples G sets per question with the given weights and has the answerer pool score them."""

    def __init__(self, items: Sequence[FeatureItem], agent_config: dict, pool_kwargs: dict, cfg: dict,
                 val_items: Sequence[FeatureItem] = ()):
        from tspo_ray.method.agent import TemporalAgent

        cfg = validate(_build(Config, cfg, ""))
        self.items, self.val_items, self.agent_config = list(items), list(val_items), agent_config
        self.agent = TemporalAgent(**agent_config).eval()
        self.pool = AnswererPool(**pool_kwargs)
        self.cfg = cfg
        self.loaded_version = -1
        # Calls run in threads (max_concurrency > 1): loading a version and sampling with it happen under one lock,
        # so one call never samples with weights another call is replacing. Answering runs outside the lock.
        self._sampling = threading.Lock()

    def rollout(self, positions: list[int], version: int, weights: dict, tau: float, seed: int):
        """Batch `positions` sampled with `weights` (version `version`) at tau, noise and haystacks seeded by seed;
        the same batch the single-process loop builds (tspo_ray.training.trainer.LocalTrainer.train_step)."""
        t0 = time.perf_counter()
        with self._sampling:
            if version != self.loaded_version:
                self.agent.load_state_dict(weights)
                self.loaded_version = version
            batch, groups = sample_batch(self.agent, self.items, positions, self.cfg, tau, seed, version)
        t1 = time.perf_counter()
        scored = self.pool.score([scoring.score_job(it, g.shown) for it, g in zip(batch, groups)])
        groups = [g.with_rewards(result) for g, (result, _texts) in zip(groups, scored)]
        t2 = time.perf_counter()
        return {"items": batch, "groups": groups, "seconds": t2 - t0, "sample_s": t1 - t0, "answer_s": t2 - t1,
                "pool_restarts": self.pool.restarts}

    def validate(self, weights: dict, k: int) -> dict:
        """The accuracy of the given weights (train.eval_selector) on the validation items, overall and per family,
        answered by the same pool."""
        from tspo_ray.evaluation.accuracy import validation_accuracy
        from tspo_ray.method.agent import TemporalAgent

        agent = TemporalAgent(**self.agent_config).eval()  # its own copy: rollouts keep sampling meanwhile
        agent.load_state_dict(weights)
        return validation_accuracy(self.val_items, agent, k, self.pool, self.cfg.train.eval_selector)

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


def learner_loop(config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker: the TSPO learner, driving the rollout pipeline."""
    import ray.train

    cfg = validate(_build(Config, config["cfg"], ""))
    coordinator = config["coordinator"]
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    stop_after = config.get("stop_after_steps")  # simulates an interruption in tests

    state = LearnerState(cfg, config["dim"], config["num_items"], learner_device(cfg))
    if config.get("resume") and latest_checkpoint(ckpt_dir) is not None:
        state.load(ckpt_dir)
    start = state.step
    tracker = None
    if config.get("mlflow_run_id"):
        from tspo_ray.training.tracking import RunLogger

        tracker = RunLogger.attach(config["mlflow_tracking_uri"], config["mlflow_run_id"])

    # Ray Train logs every report whole (one long line per step); a short progress line every few steps instead.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)  # that module names its logger by file
    progress_every = max(1, cfg.train.steps // 30)
    t_start = time.perf_counter()

    def validate_remotely() -> dict:
        return ray.get(coordinator.validate.remote(state.weights_of(state.step), cfg.eval.num_frames))

    validate_fn = validate_remotely if config.get("has_val_items") else None
    in_flight: collections.deque = collections.deque()
    weight_refs: dict[int, Any] = {}  # one object-store copy per version, shared by the batches sampled with it
    next_batch = state.step
    while state.step < cfg.train.steps:
        # Top up the pipeline: batches up to step + max_lag, each with the version the schedule names.
        while next_batch < cfg.train.steps and next_batch <= state.step + cfg.train.max_lag:
            version = state.sampling_version(next_batch)
            if version not in weight_refs:
                weight_refs[version] = ray.put(state.weights_of(version))  # the coordinator samples on CPU
            fut = coordinator.rollout.remote(state.positions(next_batch), version, weight_refs[version],
                                             state.tau_at(next_batch), state.sampling_seed(next_batch))
            in_flight.append((next_batch, fut))
            next_batch += 1
        batch_index, fut = in_flight.popleft()
        t_wait = time.perf_counter()
        out = ray.get(fut)
        waited = time.perf_counter() - t_wait
        t0 = time.perf_counter()
        metrics = state.update(out["items"], out["groups"])
        learn_s = time.perf_counter() - t0
        # batches in flight hold their own reference; only versions not yet sampled from are kept here
        weight_refs = {v: r for v, r in weight_refs.items() if v >= state.sampling_version(next_batch)}
        n = len(out["groups"])
        metrics.update(
            rollout_groups_per_s=n / max(out["seconds"], 1e-9), learner_groups_per_s=n / max(learn_s, 1e-9),
            learner_wait_s=waited, answerer_restarts=float(out["pool_restarts"]), step=float(state.step),
            batch_index=float(batch_index),
            # where a step's time goes; sampling and answering overlap the learner's update of the batch before
            time_sample_s=out["sample_s"], time_answer_s=out["answer_s"], time_learn_s=learn_s,
            time_wait_s=waited,
        )
        metrics.update(state.checkpoint_after_step(ckpt_dir, validate_fn))
        if tracker:
            tracker.log_metrics(metrics, state.step)
        if state.step == cfg.train.steps or (stop_after is not None and state.step >= stop_after):
            # once, at the end: a report is a round trip through Ray Train's controller (about 1.6 s each on the
            # 2-core machine, which at every 3rd step had cost the loop half its speed); metrics go to MLflow
            ray.train.report({k: float(v) for k, v in metrics.items()})
        if state.step % progress_every == 0 or state.step == cfg.train.steps:
            # to the process's own stdout: Ray Train wraps sys.stdout in the worker and echoes it, so a plain
            # print reached the driver twice
            print(f"step {state.step}/{cfg.train.steps}  reward {metrics['reward']:.3f}  "
                  f"accuracy {metrics['accuracy']:.3f}  R_T {metrics['r_temporal']:.3f}  tau {metrics['tau']:.3f}  "
                  f"zero-var {metrics['zero_variance_fraction']:.2f}  staleness {metrics['staleness']:.1f}  "
                  f"{(state.step - start) / (time.perf_counter() - t_start):.2f} steps/s",
                  file=sys.__stdout__, flush=True)
        if stop_after is not None and state.step >= stop_after:
            break


def train_distributed(cfg: Config, items: Sequence[FeatureItem], tracker=None, resume: bool = False,
                      stop_after: int | None = None, val_items: Sequence[FeatureItem] = ()) -> None:
    """The whole run on Ray (connected by the caller): the rollout coordinator with its answerer pool, and the Ray
    Train learner, which checkpoints into train.output_dir/checkpoints (resumed from with `resume`)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tspo_ray.answerers import AnswererFactory, settings_for
    from tspo_ray.distributed.placement import answerer_actor_options, learner_scaling
    from tspo_ray.training.learner_state import build_agent

    dim = items[0].frame_features.shape[-1]
    agent_config = build_agent(cfg, dim).config()
    actor = answerer_actor_options(cfg)
    pool_kwargs = {"answerer_factory": AnswererFactory(cfg.answerer.kind, settings_for(cfg)),
                   "num_actors": cfg.train.num_answerers, "num_cpus": actor["num_cpus"], "num_gpus": actor["num_gpus"],
                   "resources": actor.get("resources")}
    coordinator = ray.remote(num_cpus=0.1, max_concurrency=cfg.train.max_lag + 2)(RolloutCoordinator).remote(
        items, agent_config, pool_kwargs, cfg.to_dict(), val_items)
    loop_config = {"cfg": cfg.to_dict(), "coordinator": coordinator, "num_items": len(items), "dim": dim,
                   "resume": resume, "stop_after_steps": stop_after, "has_val_items": bool(val_items)}
    if tracker:
        loop_config.update(mlflow_run_id=tracker.run_id, mlflow_tracking_uri=tracker.tracking_uri)
    trainer = TorchTrainer(
        learner_loop, train_loop_config=loop_config, scaling_config=ScalingConfig(**learner_scaling(cfg)),
        run_config=RunConfig(name="learner", storage_path=str((Path(cfg.train.output_dir) / "ray_train").resolve())),
    )
    try:
        trainer.fit()
    finally:
        ray.kill(coordinator)
