"""Train a TSPO keyframe selector on Ray, then evaluate it on the test split against every selector of
eval.selectors (by default the training-free baselines and each inference mode of the agent).

    uv run python jobs/train.py                                   # starts a local Ray, embedded world
    ray job submit --working-dir . -- python jobs/train.py        # against a running cluster (ray start --head)
    uv run python jobs/train.py --resume                          # continue from the latest checkpoint
    uv run python jobs/train.py --config configs/embedded.yaml train.steps=80 --results outputs/results.json

Ray Data extracts features; rollout coordinators (train.num_coordinators; configs/embedded.yaml: one per batch in
flight) sample G keyframe sets per question and answerer-actor pools score them (train.num_answerers 0, as
configs/embedded.yaml has: each coordinator answers them itself); a Ray Train learner applies the clipped GRPO update
(rollouts up to train.max_lag versions ahead);
MLflow holds one run with params, per-step metrics, the final table, score-curve pictures and the model.
`--local` runs the same loop in one process without Ray.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tspo_ray.answerers import check_config
from tspo_ray.config import Config, ConfigError, load_config, parse_job_args
from tspo_ray.synthetic.dataset import ensure_world


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
    ap.add_argument("overrides", nargs="*", help="config overrides anywhere on the line, e.g. train.steps=20 grpo.lr=1e-3")
    args = parse_job_args(ap, argv)
    if args.retry_failed:
        args.overrides.append("features.retry_failed=true")
    return args


def load_training_items(cfg: Config, args) -> tuple[list, list] | None:
    """Features of the training split and, with train.eval_every, of the validation split (Ray Data unless --local);
    None after printing why training cannot start."""
    from tspo_ray.checkpoint import check_resumable
    from tspo_ray.data.records import RecordError, format_skipped
    from tspo_ray.distributed.feature_pipeline import ray_extractor
    from tspo_ray.safe_files import UnsafeFileError
    from tspo_ray.splits import prepare_split
    from tspo_ray.training.learner_state import LearnerState, ResumeError
    from tspo_ray.video.encoders import load_encoder

    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    try:
        if args.resume:
            check_resumable(ckpt_dir)
        encoder = load_encoder(cfg.features.encoder)  # loaded once for both splits
        extract = None if args.local else ray_extractor(cfg, encoder=encoder)
        items, problems, counts = prepare_split(cfg, "train", encoder, extract=extract,
                                                max_questions=cfg.data.max_train_questions)
        val_items = []
        if cfg.train.eval_every and (Path(cfg.data.root) / cfg.data.val).exists():
            val_items, _, _ = prepare_split(cfg, "val", encoder, extract=extract,
                                            max_questions=cfg.data.max_eval_questions)
        if args.resume and items and (ckpt_dir / "latest.json").exists():
            # refuse a checkpoint of another dataset, seed or lag here, not inside a Ray Train worker
            LearnerState(cfg, items[0].frame_features.shape[-1], len(items)).load(ckpt_dir)
    except (ConfigError, RecordError, UnsafeFileError, ResumeError) as exc:  # RecordError lists every bad line
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, RecordError):
            print("fix these lines, or set data.on_bad_record=skip to train without them", file=sys.stderr)
        return None
    print(f"features: {counts}; {len(items)} training questions, {len(problems)} skipped")
    if problems:
        print(format_skipped(problems).lstrip("\n"))
    if not items:
        print("error: no usable training questions" + ("" if problems else " (the split is empty)"), file=sys.stderr)
        return None
    return items, val_items


def evaluate_and_report(cfg: Config, args, tracker, train_s: float) -> int:
    """The test-split table of the trained agent: printed, written to --results, logged to MLflow."""
    from tspo_ray.answerers import build_answerer, settings_for
    from tspo_ray.checkpoint import load_agent, recommended_checkpoint
    from tspo_ray.evaluation.accuracy import AllRequestsRejected, format_table
    from tspo_ray.evaluation.split_job import run_evaluation

    out = Path(cfg.train.output_dir)
    # the checkpoint chosen on validation (train.eval_every), else the final one
    checkpoint = recommended_checkpoint(out / "checkpoints") or out / "checkpoints"
    print(f"evaluating {checkpoint.name if checkpoint.is_file() else 'the final checkpoint'}")
    agent = load_agent(checkpoint).eval()
    agent.anchors = cfg.policy.anchors  # the anchors method places the frames the agent was trained to draw
    answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))
    try:
        if cfg.eval.choose_inference_mode and (Path(cfg.data.root) / cfg.data.val).exists():
            from tspo_ray.training.model_selection import choose_inference_mode

            mode, by_mode = choose_inference_mode(cfg, checkpoint, out / "eval_val", agent, answerer)
            cfg.agent.inference_mode = mode
            print(f"default inference mode, chosen on the validation split: agent:{mode} ("
                  + ", ".join(f"{m} {100 * a:.1f}" for m, a in by_mode.items()) + ")")
            if tracker:
                tracker.set_tag("default_inference_mode", f"agent:{mode}")  # a tag: a re-run may choose anew
                tracker.log_metrics({f"val/agent:{m}/accuracy": a for m, a in by_mode.items()}, cfg.train.steps)
        payload = run_evaluation(cfg, "test", cfg.eval.selectors, out / "eval", agent=agent, answerer=answerer,
                                 num_plots=cfg.eval.num_plots, checkpoint=str(checkpoint))
    except AllRequestsRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(payload["results"]))
    if args.results:
        from tspo_ray.safe_files import write_text_atomic

        summary = {"results": payload["results"], "train_seconds": round(train_s, 1), "config": cfg.to_dict()}
        write_text_atomic(args.results, json.dumps(summary, indent=2))
        print(f"wrote {args.results}")
    if tracker:
        tracker.log_metrics({f"test/{m}/accuracy": r["accuracy"] for m, r in payload["results"].items()},
                            cfg.train.steps)
        tracker.log_artifacts(out / "eval", "eval")
        tracker.log_model(agent, checkpoint)
    return 0


def run_job(cfg: Config, args, tracker) -> int:
    t0 = time.time()
    loaded = load_training_items(cfg, args)
    if loaded is None:
        return 1
    items, val_items = loaded
    stopped: tuple = ()  # the Ray path's "a process died more often than allowed"
    if args.local:
        from tspo_ray.training.trainer import train_single_process as train
    else:
        from tspo_ray.distributed.training import TrainingStopped
        from tspo_ray.distributed.training import train_distributed as train

        stopped = (TrainingStopped,)
    try:
        train(cfg, items, tracker, resume=args.resume, stop_after=args.stop_after, val_items=val_items)
    except stopped as exc:
        print(stopped_line(cfg, args, exc), file=sys.stderr)
        return 1
    if args.stop_after:
        print(f"stopped after step {args.stop_after} as asked")
        return 0
    return evaluate_and_report(cfg, args, tracker, time.time() - t0)


def stopped_line(cfg: Config, args, exc: Exception) -> str:
    """The one line a stopped run ends with: what died and how often, the newest checkpoint, the --resume command.
    A Ray this job started is shut down first, so that no log line of its processes comes after it."""
    import shlex

    from tspo_ray.checkpoint import latest_checkpoint, latest_step

    if args.owns_ray:
        import ray

        ray.shutdown()
    ckpt_dir = Path(cfg.train.output_dir) / "checkpoints"
    newest = latest_checkpoint(ckpt_dir)
    where = "no checkpoint yet"
    if newest is not None and newest.exists():
        where = f"newest checkpoint {newest} (step {latest_step(ckpt_dir)})"
    again = [a for a in args.command_line if a != "--resume"]
    return f"error: {exc}; {where}; resume with: python jobs/train.py --resume {shlex.join(again)}".rstrip()


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.command_line = list(sys.argv[1:] if argv is None else argv)  # for the --resume hint of a stopped run
    try:
        cfg = check_config(load_config(args.config, args.overrides))
        # absolute, because Ray Train workers run in their own working directory
        cfg.train.output_dir = str(Path(cfg.train.output_dir).absolute())
        ensure_world(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    args.owns_ray = False
    if not args.local:
        import os

        import ray

        from tspo_ray.distributed import init_ray

        args.owns_ray = not ray.is_initialized()

        # A local Ray on a small machine: the actors are light, so offer at least 4 logical CPUs
        # (the learner, the answerers, the coordinator and the feature workers all fit). Ignored for a cluster.
        init_ray(num_cpus=max(4, os.cpu_count() or 1), ignore_reinit_error=True)
    tracker = None
    if cfg.tracking.enabled:
        from tspo_ray.training.tracking import open_job_run

        tracker = open_job_run(cfg.tracking, out, cfg.flat(), {"mode": "local" if args.local else "ray"}, args.resume)
        print(f"MLflow run {tracker.run_id} at {tracker.tracking_uri}")
    import signal

    previous = signal.signal(signal.SIGTERM, raise_interrupt)  # `ray job stop`, kill: the run ends KILLED
    status = "FAILED"
    try:
        code = run_job(cfg, args, tracker)
        status = "KILLED" if code == 0 and args.stop_after else ("FINISHED" if code == 0 else "FAILED")
        return code
    except KeyboardInterrupt:
        status = "KILLED"
        print("interrupted: resume with --resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if tracker:
            tracker.finish(status)


if __name__ == "__main__":
    sys.exit(main())
