"""Decoupled TSPO training on Ray: a rollout coordinator actor and a Ray Train learner loop.

The learner (a TorchTrainer worker) owns the LearnerState. It keeps up to `max_lag + 1` rollout batches in flight:
batch b is sampled by rollout coordinator b mod N (train.num_coordinators) with the weights of version
max(0, b - max_lag) (the object store carries the state dict, put once per version), answered by that coordinator's
answerer pool, and returned as groups stamped with that version.
The learner updates on batch b at step b, so every group's staleness is at most max_lag (0 = synchronous: sample,
then learn). The clipped importance ratio against the stored old log-probs keeps the stale groups' update correct.
The schedule is the single-process loop's (tspo_ray.training.trainer), so both give the same weights for the same config.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import ray
import torch

from tspo_ray.checkpoint import latest_checkpoint, latest_step
from tspo_ray.config import Config
from tspo_ray.data.items import FeatureItem
from tspo_ray.distributed.answerer_pool import AnswererPool, InProcessPool
from tspo_ray.training import scoring
from tspo_ray.training.learner_state import LearnerState
from tspo_ray.training.trainer import sample_batch


class RolloutCoordinator:
    """Ray actor: samples G sets per question with the given weights and has the answerer pool score them."""

    def __init__(self, items: Sequence[FeatureItem], agent_config: dict, pool_kwargs: dict, cfg: dict,
                 val_items: Sequence[FeatureItem] = ()):
        from tspo_ray.method.kinds import agent_from_config
        from tspo_ray.threads import use_torch_threads

        cfg = Config.load(cfg)
        use_torch_threads(cfg.train.torch_threads)
        self.items, self.val_items, self.agent_config = list(items), list(val_items), agent_config
        self.agent = agent_from_config(agent_config).eval()
        self.pool = (AnswererPool(**pool_kwargs) if pool_kwargs["num_actors"]
                     else InProcessPool(pool_kwargs["answerer_factory"]))
        self.cfg = cfg
        self.loaded_version = -1
        # Calls run in threads (max_concurrency > 1): loading a version and sampling with it happen under one lock,
        # so one call never samples with weights another call is replacing. Answering runs outside the lock.
        self._sampling = threading.Lock()
        # Answering in this process (num_answerers 0): one call at a time, sampling and answering under one lock.
        # The answerer is not made for threads, and two batches' threads, one sampling (torch) and one answering
        # (Python), would take turns at the GIL (docs/scaling.md).
        self._in_process = threading.Lock() if isinstance(self.pool, InProcessPool) else contextlib.nullcontext()

    def rollout(self, positions: list[int], version: int, weights: dict, tau: float, seed: int):
        """Batch `positions` sampled with `weights` (version `version`) at tau, noise and haystacks seeded by seed;
        the same batch the single-process loop builds (tspo_ray.training.trainer.LocalTrainer.train_step)."""
        with self._in_process:
            t0 = time.perf_counter()
            with self._sampling:
                if version != self.loaded_version:
                    self.agent.load_state_dict(weights)
                    self.loaded_version = version
                batch, groups = sample_batch(self.agent, self.items, positions, self.cfg, tau, seed, version)
            t1 = time.perf_counter()
            answering: dict[str, float] = {}
            scored = self.pool.score([scoring.score_job(it, g.shown) for it, g in zip(batch, groups)], answering)
            groups = [g.with_rewards(result) for g, (result, _texts) in zip(groups, scored)]
            t2 = time.perf_counter()
        # the learner holds the training items itself: a question goes back as its position, and only an item made
        # for this batch (a haystack) whole (a batch's 64 items were 4.5 MB to pickle, send and unpickle)
        batch_items = [int(pos) if it is self.items[pos] else it for pos, it in zip(positions, batch)]
        return {"items": batch_items, "groups": groups, "seconds": t2 - t0, "sample_s": t1 - t0, "answer_s": t2 - t1,
                "pool_restarts": self.pool.restarts, "result_bytes": tensor_bytes((batch_items, groups)),
                "answering": answering}

    def validate(self, weights: dict, k: int) -> dict:
        """The accuracy of the given weights (train.eval_selector) on the validation items, overall and per family,
        answered by the same pool."""
        from tspo_ray.evaluation.accuracy import validation_accuracy
        from tspo_ray.method.kinds import agent_from_config

        agent = agent_from_config(self.agent_config).eval()  # its own copy: rollouts keep sampling meanwhile
        agent.load_state_dict(weights)
        with self._in_process:
            return validation_accuracy(self.val_items, agent, k, self.pool, self.cfg.train.eval_selector)

    def ping(self) -> bool:
        return True

    def node_id(self) -> str:
        """The Ray node this coordinator runs on (placement checks)."""
        return ray.get_runtime_context().get_node_id()

    def answerer_node_ids(self) -> list[str]:
        """The Ray node of each answerer actor process (placement checks)."""
        return ray.get([a.node_id.remote() for a in self.pool.processes()])

    def failure(self) -> str | None:
        """Why this coordinator cannot roll out any more (its answerer actors gave up), or None."""
        return self.pool.gave_up


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a rollout result or a state dict: what it costs the object store, near enough (the
    rest is ids, paths and floats)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(tensor_bytes(getattr(obj, f)) for f in obj.__dataclass_fields__)
    return 0


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


class LearnerStopped(Exception):
    """The learner cannot go on, for a reason a restart of the learner does not mend: the rollout coordinator is
    gone for good, or its answerer actors gave up. The learner returns; the driver says why (train_distributed)."""


class RolloutPipeline:
    """The learner's side of the rollouts: the batches in flight (up to max_lag + 1), their weights in the object
    store (one copy per version), and their re-submission when a rollout coordinator restarts.

    Batch b goes to coordinator b mod N, so with N coordinators N batches are sampled at once. A batch is a function
    of (seed, batch index) and the weights of its version, all held by the LearnerState (and so by its checkpoint):
    a restarted coordinator, which holds no state, is sent the batches it owed again and samples them exactly;
    results of the dead calls never arrive, so no group is lost or learned twice."""

    def __init__(self, state: LearnerState, coordinators: Sequence, cfg: Config):
        self.state, self.coordinators, self.cfg = state, list(coordinators), cfg
        self.in_flight: collections.deque = collections.deque()  # (batch index, future)
        self.weight_refs: dict[int, Any] = {}
        self.next_batch = state.step
        self.coordinator_restarts = 0
        self._pool_restarts = [0] * len(self.coordinators)  # each coordinator's answerer replacements, as last told
        # the weight broadcast since take_broadcast: seconds spent putting new versions, and their bytes
        self.broadcast_s, self.broadcast_bytes = 0.0, 0

    def _weights_ref(self, version: int):
        if version not in self.weight_refs:
            t0 = time.perf_counter()
            weights = self.state.weights_of(version)
            self.weight_refs[version] = ray.put(weights)  # the coordinator samples on CPU
            self.broadcast_s += time.perf_counter() - t0
            self.broadcast_bytes += tensor_bytes(weights)
        return self.weight_refs[version]

    def coordinator_of(self, batch: int) -> int:
        """The index of the coordinator that samples batch `batch`."""
        return batch % len(self.coordinators)

    def _submit(self, batch: int):
        s = self.state
        version = s.sampling_version(batch)
        coordinator = self.coordinators[self.coordinator_of(batch)]
        return coordinator.rollout.remote(s.positions(batch), version, self._weights_ref(version), s.tau_at(batch),
                                          s.sampling_seed(batch))

    def top_up(self) -> None:
        """Send the batches up to step + max_lag not yet sent, each with the version the schedule names. The learner
        calls it as soon as an update has made a new version, before that step's metrics and checkpoint, so the
        coordinator samples the next batch meanwhile."""
        while self.next_batch < self.cfg.train.steps and self.next_batch <= self.state.step + self.cfg.train.max_lag:
            self.in_flight.append((self.next_batch, self._submit(self.next_batch)))
            self.next_batch += 1

    def next_rollout(self) -> tuple[int, dict, float]:
        """Top up the pipeline, then the rollout of batch `step`: (batch index, the coordinator's output, seconds
        waited)."""
        self.top_up()
        t0 = time.perf_counter()
        while True:
            batch, future = self.in_flight[0]
            try:
                out = self.call(lambda: ray.get(future))
                break
            except CoordinatorRestarted:
                self.in_flight = collections.deque((b, self._submit(b)) for b, _ in self.in_flight)
        self.in_flight.popleft()
        # batches in flight hold their own reference; only versions not yet sampled from are kept here
        keep_from = self.state.sampling_version(self.next_batch)
        self.weight_refs = {v: r for v, r in self.weight_refs.items() if v >= keep_from}
        return batch, out, time.perf_counter() - t0

    def answerer_restarts(self, batch: int, reported: int) -> int:
        """Answerer replacements over all coordinators, once batch `batch`'s coordinator has reported its count."""
        self._pool_restarts[self.coordinator_of(batch)] = reported
        return sum(self._pool_restarts)

    def take_broadcast(self) -> tuple[float, int]:
        """(seconds, bytes) of the weights put since the last call, reset."""
        out = self.broadcast_s, self.broadcast_bytes
        self.broadcast_s, self.broadcast_bytes = 0.0, 0
        return out

    def call(self, get):
        """get() (a ray.get on the coordinator); CoordinatorRestarted once Ray restarted a dead coordinator,
        LearnerStopped when it will not come back or its answerers gave up."""
        from ray.exceptions import RayActorError

        from tspo_ray.answerers.errors import AnswerersGaveUp

        try:
            return get()
        except AnswerersGaveUp as exc:  # raised in the coordinator, re-raised here as RayTaskError(AnswerersGaveUp)
            raise LearnerStopped(str(exc).strip().splitlines()[-1]) from exc
        except RayActorError:
            self.await_coordinators()
            self.coordinator_restarts += 1
            # every batch in flight is sent again: the dead one's calls are lost, a live one's answer is the same
            print(f"a rollout coordinator died; restarted, re-sending batches {[b for b, _ in self.in_flight]}",
                  file=sys.__stdout__, flush=True)
            raise CoordinatorRestarted() from None

    def await_coordinators(self, timeout_s: float = 600.0) -> None:
        """Wait until every coordinator answers, Ray having restarted a dead one (calls meanwhile say it is
        unavailable); LearnerStopped when one is dead for good (past its max_restarts)."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.monotonic() + timeout_s
        for coordinator in self.coordinators:
            while True:
                try:
                    ray.get(coordinator.ping.remote(), timeout=60)
                    break
                except ActorDiedError as exc:
                    raise LearnerStopped("the rollout coordinator is dead for good") from exc
                except (ActorUnavailableError, GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise LearnerStopped(f"the rollout coordinator did not come back within {timeout_s:.0f} s")
                    time.sleep(0.5)


class CoordinatorRestarted(Exception):
    """The coordinator died and Ray restarted it: the calls in flight are lost and must be sent again."""


def checkpoint_mark(ckpt_dir: Path) -> tuple[str, int] | None:
    """The newest checkpoint's path and modification time: a restarted learner tells by it whether this run wrote a
    checkpoint since it started (a fresh run must not continue a previous run's leftovers)."""
    path = latest_checkpoint(ckpt_dir)
    if path is None or not path.exists():
        return None
    return str(path), path.stat().st_mtime_ns


def learner_loop(config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker: the TSPO learner, driving the rollout pipeline.

    Ray Train starts it again in a fresh worker when the worker dies (train.max_failures); the new one continues
    from the newest checkpoint this run wrote, or from where the run started."""
    import ray.train

    from tspo_ray.threads import use_torch_threads

    cfg = Config.load(config["cfg"])
    use_torch_threads(cfg.train.torch_threads)
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    stop_after = config.get("stop_after_steps")  # simulates an interruption in tests

    state = LearnerState(cfg, config["dim"], config["num_items"], learner_device(cfg))
    train_items = ray.get(config["items"])  # the rollouts name a training question by its position
    written_since_start = checkpoint_mark(ckpt_dir) != config.get("start_mark")
    if (config.get("resume") or written_since_start) and latest_checkpoint(ckpt_dir) is not None:
        state.load(ckpt_dir)
        if written_since_start:
            print(f"learner restarted: continuing from the checkpoint of step {state.step}", file=sys.__stdout__,
                  flush=True)
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
    pipeline = RolloutPipeline(state, config["coordinators"], cfg)

    def validate_remotely() -> dict:
        weights = state.weights_of(state.step)
        while True:
            try:
                return pipeline.call(
                    lambda: ray.get(pipeline.coordinators[0].validate.remote(weights, cfg.eval.num_frames)))
            except CoordinatorRestarted:
                continue

    validate_fn = validate_remotely if config.get("has_val_items") else None
    if config.get("report_node"):  # placement checks: where the learner, the coordinator and the answerers run
        report_placement(config["report_node"], pipeline.coordinators)
    bookkeeping_s = 0.0  # the last step's metrics logging, checkpoint and progress line
    try:
        while state.step < cfg.train.steps:
            batch_index, out, waited = pipeline.next_rollout()
            t0 = time.perf_counter()
            metrics = state.update([train_items[x] if isinstance(x, int) else x for x in out["items"]], out["groups"])
            learn_s = time.perf_counter() - t0
            pipeline.top_up()  # the new version's batch is sampled while this step logs and checkpoints
            broadcast_s, broadcast_bytes = pipeline.take_broadcast()
            n = len(out["groups"])
            metrics.update(
                rollout_groups_per_s=n / max(out["seconds"], 1e-9), learner_groups_per_s=n / max(learn_s, 1e-9),
                learner_wait_s=waited, step=float(state.step), batch_index=float(batch_index),
                answerer_restarts=float(pipeline.answerer_restarts(batch_index, out["pool_restarts"])),
                coordinator_restarts=float(pipeline.coordinator_restarts),
                # where a step's time goes; sampling and answering overlap the learner's update of the batch before
                time_sample_s=out["sample_s"], time_answer_s=out["answer_s"], time_learn_s=learn_s,
                time_wait_s=waited, time_broadcast_s=broadcast_s, time_bookkeeping_s=bookkeeping_s,
                # object-store traffic of the step: the weights put for new versions, the rollout result coming back
                store_weight_bytes=float(broadcast_bytes), store_result_bytes=float(out["result_bytes"]),
            )
            # a simulated answerer's inner compute, modelled GPU time and overrun summed over the batch's calls, and
            # the pool's time outside the actors (AnswererPool.score)
            metrics.update({("time_answer_" if k.endswith("_s") else "answer_") + k.removeprefix("sim_"): v
                            for k, v in out.get("answering", {}).items()})
            # the step's metrics before its checkpoint: a learner killed between the two redoes the step from the
            # previous checkpoint and logs it again, rather than resuming past a step MLflow never saw
            t1 = time.perf_counter()
            if tracker:
                tracker.log_metrics(metrics, state.step)
            checkpoint_metrics = state.checkpoint_after_step(ckpt_dir, validate_fn)
            if tracker and checkpoint_metrics:
                tracker.log_metrics(checkpoint_metrics, state.step)
            metrics.update(checkpoint_metrics)
            if state.step == cfg.train.steps or (stop_after is not None and state.step >= stop_after):
                # once, at the end: a report is a round trip through Ray Train's controller (about 1.6 s each on
                # the 2-core machine, which at every 3rd step had cost the loop half its speed); metrics go to MLflow
                ray.train.report({k: float(v) for k, v in metrics.items()})
            if state.step % progress_every == 0 or state.step == cfg.train.steps:
                print_progress(state, metrics, start, t_start)
            bookkeeping_s = time.perf_counter() - t1
            if stop_after is not None and state.step >= stop_after:
                break
    except LearnerStopped as exc:
        # not raised: Ray Train would start the learner again, to meet the same dead end
        print(f"learner stopped at step {state.step}: {exc}", file=sys.__stdout__, flush=True)


def report_placement(registry, coordinators: Sequence) -> None:
    """Tell `registry` (an actor with put(name, node_id)) the node of the learner, of every coordinator
    (coordinator, coordinator1, ...) and of every answerer actor process (answerer0, answerer1, ... over all
    coordinators)."""
    answerer_nodes = [node for c in coordinators for node in ray.get(c.answerer_node_ids.remote())]
    ray.get([registry.put.remote("learner", ray.get_runtime_context().get_node_id())]
            + [registry.put.remote(f"coordinator{i or ''}", ray.get(c.node_id.remote()))
               for i, c in enumerate(coordinators)]
            + [registry.put.remote(f"answerer{i}", node) for i, node in enumerate(answerer_nodes)])


def print_progress(state: LearnerState, metrics: dict, start: int, t_start: float) -> None:
    """One short progress line, to the process's own stdout: Ray Train wraps sys.stdout in the worker and echoes
    it, so a plain print reached the driver twice."""
    steps = state.cfg.train.steps
    print(f"step {state.step}/{steps}  reward {metrics['reward']:.3f}  "
          f"accuracy {metrics['accuracy']:.3f}  R_T {metrics['r_temporal']:.3f}  tau {metrics['tau']:.3f}  "
          f"zero-var {metrics['zero_variance_fraction']:.2f}  staleness {metrics['staleness']:.1f}  "
          f"{(state.step - start) / (time.perf_counter() - t_start):.2f} steps/s",
          file=sys.__stdout__, flush=True)


class TrainingStopped(RuntimeError):
    """A run that stopped short of train.steps because a process died more often than allowed; the message says
    which and how often (jobs/train.py adds the newest checkpoint and the --resume command)."""


def train_distributed(cfg: Config, items: Sequence[FeatureItem], tracker=None, resume: bool = False,
                      stop_after: int | None = None, val_items: Sequence[FeatureItem] = (),
                      report_node: Any = None) -> None:
    """The whole run on Ray (connected by the caller): the rollout coordinator with its answerer pool, and the Ray
    Train learner, which checkpoints into train.output_dir/checkpoints (resumed from with `resume`).

    A dead learner worker is started again by Ray Train and a dead coordinator by Ray, up to train.max_failures
    times each, and answerer actors are replaced up to train.answerer_max_restarts times; the run continues from
    the learner's checkpoint to the weights of an uninterrupted run. Past a limit: TrainingStopped.

    For placement checks, `report_node` (an actor with put(name, node_id), e.g. distributed.cluster.NodeRegistry)
    is told the node of the learner, the coordinator and every answerer actor process."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from tspo_ray.answerers import AnswererFactory, settings_for, slots_per_actor
    from tspo_ray.distributed.placement import answerer_actor_options, coordinator_options, learner_scaling
    from tspo_ray.training.learner_state import build_agent

    dim = items[0].frame_features.shape[-1]
    agent_config = build_agent(cfg, dim).config()
    actor = answerer_actor_options(cfg)
    if cfg.train.num_answerers == 0 and actor["num_gpus"]:
        from tspo_ray.config import ConfigError

        raise ConfigError(f"train.num_answerers: 0 answers in the rollout coordinator's own process, which has no "
                          f"GPU, but the {cfg.answerer.kind} answerer asks for {actor['num_gpus']}; use actors (>= 1)")
    n = cfg.train.coordinators()
    pool_kwargs = {"answerer_factory": AnswererFactory(cfg.answerer.kind, settings_for(cfg)),
                   "num_cpus": actor["num_cpus"], "num_gpus": actor["num_gpus"],
                   "resources": actor.get("resources"), "max_restarts": cfg.train.answerer_max_restarts,
                   "jobs_per_call": cfg.train.jobs_per_call,
                   "slots_per_actor": slots_per_actor(cfg.answerer.kind, cfg.answerer.settings),
                   # each coordinator's share of the batches in flight (its pool's spread cut uses it)
                   "batches_in_flight": math.ceil((cfg.train.max_lag + 1) / n),
                   "torch_threads": cfg.train.torch_threads}
    # max_task_retries=0: the learner itself sends a restarted coordinator the batches it owed (RolloutPipeline).
    # The items go to the object store once, held here for the whole run, so that a restart finds them there.
    item_refs = ray.put(list(items)), ray.put(list(val_items))
    coordinator_class = ray.remote(**coordinator_options(cfg), max_restarts=cfg.train.max_failures,
                                   max_task_retries=0)(RolloutCoordinator)
    coordinators = [coordinator_class.remote(item_refs[0], agent_config, pool_kwargs | {"num_actors": actors},
                                             cfg.to_dict(), item_refs[1])
                    for actors in (answerer_share(cfg.train.num_answerers, n, i) for i in range(n))]
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    loop_config = {"cfg": cfg.to_dict(), "coordinators": coordinators, "items": item_refs[0], "num_items": len(items),
                   "dim": dim,
                   "resume": resume, "stop_after_steps": stop_after, "has_val_items": bool(val_items),
                   "start_mark": checkpoint_mark(ckpt_dir), "report_node": report_node}
    if tracker:
        loop_config.update(mlflow_run_id=tracker.run_id, mlflow_tracking_uri=tracker.tracking_uri)
    trainer = TorchTrainer(
        learner_loop, train_loop_config=loop_config, scaling_config=ScalingConfig(**learner_scaling(cfg)),
        run_config=RunConfig(name="learner", storage_path=str((Path(cfg.train.output_dir) / "ray_train").resolve()),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures)),
    )
    try:
        try:
            trainer.fit()
        except TrainingFailedError as exc:
            how, last = last_worker_error(exc)
            raise TrainingStopped(f"the Ray Train learner worker {how} {times(cfg.train.max_failures + 1)} "
                                  f"(train.max_failures={cfg.train.max_failures}); last: {last}") from None
        why = next(filter(None, (coordinator_failure(c, cfg) for c in coordinators)), None)
        if why:
            raise TrainingStopped(why)
        reached = latest_step(ckpt_dir)
        if stop_after is None and reached != cfg.train.steps:
            raise TrainingStopped(f"the learner returned at step {reached} of {cfg.train.steps} (its output says why)")
    finally:
        for coordinator in coordinators:
            ray.kill(coordinator)


def answerer_share(num_answerers: int, num_coordinators: int, index: int) -> int:
    """The answerer actors of coordinator `index`: num_answerers shared out as evenly as can be, the first ones
    taking the remainder."""
    return num_answerers // num_coordinators + (index < num_answerers % num_coordinators)


def coordinator_failure(coordinator, cfg: Config) -> str | None:
    """After the learner returned: why the run cannot go on (the coordinator dead for good, or its answerers gave
    up), or None."""
    from ray.exceptions import ActorDiedError, RayActorError

    try:
        why = ray.get(coordinator.failure.remote(), timeout=120)
    except ActorDiedError:
        return (f"the rollout coordinator actor died {times(cfg.train.max_failures + 1)} "
                f"(train.max_failures={cfg.train.max_failures})")
    except RayActorError:  # restarting again after the learner gave up on it: the learner said why on stdout
        return "the rollout coordinator actor was unavailable when the learner needed it"
    return f"{why} (train.answerer_max_restarts={cfg.train.answerer_max_restarts})" if why else None


def times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def last_worker_error(exc: BaseException) -> tuple[str, str]:
    """("died" or "failed", one line naming the learner's last error): the reason its process died, or the
    worker's own exception."""
    from ray.exceptions import RayActorError

    failures = getattr(exc, "worker_failures", None) or {}
    error = next(iter(failures.values()), exc)
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    died = isinstance(error, RayActorError) or any("died" in ln for ln in lines)
    text = next((ln for ln in lines if "died" in ln or "Error" in ln), lines[0] if lines else "")
    return ("died" if died else "failed"), f"{type(error).__name__}: {text[:200]}"
