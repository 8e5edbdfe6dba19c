"""Train a TSPO keyframe selector on Ray, then evaluate it against uniform and CLIP top-k on the test split.

    uv run python jobs/train.py                                   # starts a local Ray, embedded world
    ray job submit --working-dir . -- python jobs/train.py        # against a running cluster (ray start --head)
    uv run python jobs/train.py --resume                          # continue from the latest checkpoint
    uv run python jobs/train.py --config configs/embedded.yaml train.steps=80 --results outputs/results.json

Ray Data extracts features; a rollout coordinator samples G keyframe sets per question and an answerer-actor pool
scores them; a Ray Train learner applies the clipped GRPO update (rollouts up to train.max_lag versions ahead);
MLflow holds one run with params, per-step metrics, the final table, score-curve pictures and the model.
`--local` runs the same loop in one process without Ray.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tspo_ray.config import Config, ConfigError, load_config  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "embedded.yaml"),
                    help="YAML config (default: configs/embedded.yaml, the embedded world)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
    ap.add_argument("--results", help="write the final evaluation table as JSON here")
    ap.add_argument("--local", action="store_true", help="single process, no Ray (the reference loop)")
    ap.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # simulate an interruption (tests)
    ap.add_argument("--retry-failed", action="store_true",
                    help="decode videos that failed before again (by default their recorded reason stands)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=20 grpo.lr=1e-3")
    args = ap.parse_args(argv)
    if args.retry_failed:
        args.overrides.append("features.retry_failed=true")
    return args


def train_local(cfg: Config, items, tracker, resume: bool, stop_after: int | None) -> "torch.nn.Module":  # noqa: F821
    from tspo_ray.answerers import build_answerer
    from tspo_ray.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from tspo_ray.distributed.answerer_pool import in_process_reward_fn
    from tspo_ray.trainer import LocalTrainer

    log = (lambda step, m: tracker.log_metrics(m, step)) if tracker else None
    reward_fn = in_process_reward_fn(build_answerer(cfg.answerer.kind, cfg.answerer.settings))
    trainer = LocalTrainer(items, reward_fn, cfg, log)
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    if latest_checkpoint(ckpt_dir) is not None and resume:
        trainer.load_state_dict(load_checkpoint(ckpt_dir))
    from tqdm import tqdm

    for _ in tqdm(range(trainer.step, cfg.train.steps), desc="train (local)"):
        trainer.train_step()
        if trainer.step % cfg.train.checkpoint_every == 0 or trainer.step == cfg.train.steps:
            save_checkpoint(ckpt_dir, trainer.step, trainer.state_dict() | {"config": cfg.to_dict()},
                            keep=cfg.train.keep_checkpoints)
        if stop_after and trainer.step >= stop_after:
            break
    return trainer.agent


def train_ray(cfg: Config, items, tracker, resume: bool, stop_after: int | None) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tspo_ray.answerers import AnswererFactory
    from tspo_ray.distributed.placement import answerer_actor_options, learner_scaling
    from tspo_ray.distributed.training import RolloutCoordinator, learner_loop
    from tspo_ray.trainer import build_agent

    dim = items[0].frame_features.shape[-1]
    agent_config = build_agent(cfg, dim).config()
    actor = answerer_actor_options(cfg)
    pool_kwargs = {"answerer_factory": AnswererFactory(cfg.answerer.kind, cfg.answerer.settings),
                   "num_actors": cfg.train.num_answerers, "num_cpus": actor["num_cpus"], "num_gpus": actor["num_gpus"],
                   "resources": actor.get("resources")}
    coordinator = ray.remote(num_cpus=0.1, max_concurrency=cfg.train.max_lag + 2)(RolloutCoordinator).remote(
        items, agent_config, pool_kwargs, cfg.policy.group_size, cfg.policy.num_frames, cfg.policy.likelihood)
    loop_config = {"cfg": cfg.to_dict(), "coordinator": coordinator, "num_items": len(items), "dim": dim,
                   "resume": resume, "stop_after_steps": stop_after}
    if tracker:
        loop_config.update(mlflow_run_id=tracker.run_id, mlflow_tracking_uri=tracker.tracking_uri)
    trainer = TorchTrainer(
        learner_loop, train_loop_config=loop_config, scaling_config=ScalingConfig(**learner_scaling(cfg)),
        run_config=RunConfig(name="learner", storage_path=str((Path(cfg.train.output_dir) / "ray_train").resolve())),
    )
    trainer.fit()
    ray.kill(coordinator)


def ensure_embedded_world(cfg: Config) -> None:
    """The embedded default builds its synthetic world on first use; other datasets must exist."""
    from tspo_ray.config import DataConfig

    root = Path(cfg.data.root)
    if (root / cfg.data.train).exists():
        return
    if cfg.data.root != DataConfig().root:
        raise ConfigError(f"data.root: {root / cfg.data.train} does not exist")
    from tspo_ray.synthetic.dataset import DEFAULT_COUNTS, build_world

    print(f"building the embedded synthetic world in {root} (once)")
    build_world(root, DEFAULT_COUNTS)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        # absolute, because Ray Train workers run in their own working directory
        cfg.train.output_dir = str(Path(cfg.train.output_dir).absolute())
        ensure_embedded_world(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tspo_ray.answerers import build_answerer
    from tspo_ray.checkpoint import check_resumable, load_agent
    from tspo_ray.data.records import RecordError, format_skipped
    from tspo_ray.encoders import load_encoder
    from tspo_ray.evaluation import AllRequestsRejected, format_table
    from tspo_ray.features import prepare_split
    from tspo_ray.safe_files import UnsafeFileError
    from tspo_ray.tracking import RunLogger

    from tspo_ray.evaluation_job import run_evaluation

    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not args.local:
        import os

        from tspo_ray.distributed import init_ray

        # A local Ray on a small machine: the actors are light, so offer at least 4 logical CPUs
        # (the learner, two answerers, the coordinator and the feature workers all fit). Ignored for a cluster.
        init_ray(num_cpus=max(4, os.cpu_count() or 1), ignore_reinit_error=True)
    tracker = None
    if cfg.tracking.enabled:
        tracker = RunLogger.create(cfg.tracking.tracking_uri, cfg.tracking.experiment, cfg.tracking.run_name,
                                   params=cfg.flat(), tags={"mode": "local" if args.local else "ray",
                                                            "resumed": str(args.resume)})
        print(f"MLflow run {tracker.run_id} at {tracker.tracking_uri}")
    encoder = load_encoder(cfg.features.encoder)
    try:
        if args.resume:
            check_resumable(out / "checkpoints")
        items, problems, counts = prepare_split(cfg, "train", encoder, use_ray=not args.local,
                                                max_questions=cfg.data.max_train_questions)
    except (ConfigError, RecordError, UnsafeFileError) as exc:  # RecordError lists every malformed line
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, RecordError):
            print("fix these lines, or set data.on_bad_record=skip to train without them", file=sys.stderr)
        return 1
    print(f"features: {counts}; {len(items)} training questions, {len(problems)} skipped")
    if problems:
        print(format_skipped(problems).lstrip("\n"))
    if not items:
        print("error: no usable training questions" + ("" if problems else " (the split is empty)"), file=sys.stderr)
        return 1
    if args.local:
        train_local(cfg, items, tracker, args.resume, args.stop_after)
    else:
        train_ray(cfg, items, tracker, args.resume, args.stop_after)
    train_s = time.time() - t0
    if args.stop_after:
        print(f"stopped after step {args.stop_after} as asked")
        if tracker:
            tracker.finish("KILLED")
        return 0
    agent = load_agent(out / "checkpoints").eval()
    try:
        payload = run_evaluation(cfg, "test", cfg.eval.selectors, out / "eval", agent=agent,
                                 answerer=build_answerer(cfg.answerer.kind, cfg.answerer.settings),
                                 num_plots=cfg.eval.num_plots, checkpoint=str(out / "checkpoints"))
    except AllRequestsRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        if tracker:
            tracker.finish("FAILED")
        return 1
    table = format_table(payload["results"])
    print(table)
    summary = {"results": payload["results"], "train_seconds": round(train_s, 1), "config": cfg.to_dict()}
    if args.results:
        from tspo_ray.data.records import write_text_atomic

        write_text_atomic(args.results, json.dumps(summary, indent=2))
        print(f"wrote {args.results}")
    if tracker:
        tracker.log_metrics({f"test/{m}/accuracy": r["accuracy"] for m, r in payload["results"].items()}, cfg.train.steps)
        tracker.log_artifacts(out / "eval", "eval")
        tracker.log_model(agent, out / "checkpoints")
        tracker.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
