"""Kill one process of a training job (SIGKILL) at a random step and see whether the job outlives it.

    uv run python benchmarks/chaos.py --steps 12 --checkpoint-every 4 --seed 0 [--kinds learner coordinator ...]

Starts a local Ray (4 logical CPUs) and builds a small embedded world; every job is `jobs/train.py` (the embedded
default config, reduced) run as its own driver process connected to that Ray, so that its processes can be found in
Ray's actor table and killed. First one uninterrupted job, then one job per kind, each with one kill once the job's
MLflow run has logged step K (K drawn from 2 .. steps - 2 by --seed):

  learner        the Ray Train learner worker          coordinator    the rollout coordinator actor
  answerer       one answerer actor                    all_answerers  every answerer actor at once
  driver         the jobs/train.py process, followed by `jobs/train.py --resume`
  feature_worker every Ray Data worker of a feature extraction (a fresh store), once its first entry is written

Prints, per kind: whether the job finished by itself (driver: after --resume), the steps redone (steps the learner
learned twice, from the MLflow history), the time lost against the uninterrupted job, and the largest weight
difference from the uninterrupted job's final weights (feature_worker: the largest feature difference).
The Serve replica kill is measured by the service's own test and benchmark (the service is not a training job).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tspo_ray.checkpoint import load_checkpoint
from tspo_ray.distributed import init_ray
from tspo_ray.distributed.chaos import KillWhen, kill_processes

ROOT = Path(__file__).resolve().parents[1]
TRAINING_KINDS = {"learner": ("learner", 1), "coordinator": ("coordinator", 1), "answerer": ("answerer", 1),
                  "all_answerers": ("answerer", None), "driver": (None, None)}
KINDS = [*TRAINING_KINDS, "feature_worker"]


def logged_steps(db: Path) -> list[int]:
    """Steps of every `reward` point the job's MLflow run logged (a step learned twice appears twice)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return [int(s) for (s,) in con.execute("SELECT step FROM metrics WHERE key = 'reward'")]
    except sqlite3.Error:  # not created yet, or locked by the writer for a moment
        return []


def job_command(world: Path, out: Path, store: Path, steps: int, checkpoint_every: int, resume: bool = False):
    overrides = [f"data.root={world}", f"features.store={store}", f"train.steps={steps}",
                 f"train.checkpoint_every={checkpoint_every}", "train.eval_every=0", "train.questions_per_step=8",
                 "policy.group_size=4", "policy.num_frames=4", "features.max_candidates=32", "agent.heads=4",
                 f"train.output_dir={out}/run", f"tracking.tracking_uri=sqlite:///{out}/mlflow.db"]
    return [sys.executable, str(ROOT / "jobs" / "train.py"), *overrides, "--stop-after", str(steps),
            *(["--resume"] if resume else [])]


def run_job(cmd: list[str], env: dict, log: Path, kill: KillWhen | None = None) -> int:
    """Run a job to its end (or to its death, for the driver kill); its output to `log`."""
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if kill is not None:
            kill.pid = proc.pid
            kill.start()
        code = proc.wait()
    if kill is not None:
        kill.stop()
    return code


def max_weight_difference(out: Path, reference: dict) -> float | None:
    try:
        final = load_checkpoint(out / "run" / "checkpoints")
    except Exception:  # no checkpoint: nothing to compare
        return None
    if final["step"] != reference["step"]:
        return None
    return max(float((final["agent"][k] - v).abs().max()) for k, v in reference["agent"].items())


def training_case(kind: str, args, world: Path, store: Path, env: dict, reference: dict, ref_s: float,
                  kill_at: int) -> dict:
    out = Path(args.out) / kind
    db = out / "mlflow.db"
    target, how_many = TRAINING_KINDS[kind]
    ready = lambda: any(s >= kill_at for s in logged_steps(db))  # noqa: E731
    if target is None:  # the driver itself
        killer = KillWhen(ready, lambda: [killer.pid] if not os.kill(killer.pid, signal.SIGKILL) else [])
    else:
        killer = KillWhen(ready, lambda: kill_processes(target, how_many), poll_s=0.1)
    log = out / "job.log"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    code = run_job(job_command(world, out, store, args.steps, args.checkpoint_every), env, log, killer)
    by_itself = code == 0
    if target is None and killer.killed:
        code = run_job(job_command(world, out, store, args.steps, args.checkpoint_every, resume=True), env, log)
    wall = time.perf_counter() - t0
    steps = logged_steps(db)
    last = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    return {"kind": kind, "killed": len(killer.killed), "kill_at_step": kill_at, "finished_by_itself": by_itself,
            "finished": code == 0, "steps_redone": max(0, len(steps) - args.steps) if steps else None,
            "time_lost_s": round(wall - ref_s, 1), "max_weight_diff": max_weight_difference(out, reference),
            "last_line": last[0][:200] if code else ""}


def feature_case(args, world: Path) -> dict:
    """A fresh extraction of the world's videos, uninterrupted and with every Ray Data worker killed once."""
    from tspo_ray.distributed.feature_pipeline import extract_with_ray
    from tspo_ray.video.encoders import load_encoder
    from tspo_ray.video.features import FeatureStore, StoreSpec

    videos = sorted(str(p) for p in (world / "videos").glob("*.mp4"))
    spec_dict = {"backend": "embedded"}
    spec = StoreSpec(1.0, 32, 64, load_encoder(spec_dict).name)
    kwargs = dict(num_workers=1, cpus_per_worker=0.5, decode_cpus=0.5, progress=False, chunk=16)
    runs = {}
    for name in ("straight", "killed"):
        store = FeatureStore(Path(args.out) / "feature_worker" / name)
        killer = KillWhen(lambda: len(list((store.root / "videos").glob("*.safetensors"))) >= 1,
                          lambda: kill_processes("feature_worker", None), poll_s=0.01)
        if name == "killed":
            killer.start()
        t0 = time.perf_counter()
        counts = extract_with_ray(videos, spec_dict, spec, store, **kwargs)
        runs[name] = (counts, time.perf_counter() - t0, store, killer)
        killer.stop()
    (ref_counts, ref_s, ref_store, _), (counts, wall, store, killer) = runs["straight"], runs["killed"]
    diffs = [float((store.get(spec.video_key(v)).frame_features - ref_store.get(spec.video_key(v)).frame_features)
                   .abs().max()) for v in videos if store.has(spec.video_key(v))]
    return {"kind": "feature_worker", "killed": len(killer.killed), "kill_at_step": None,
            "finished_by_itself": counts == ref_counts, "finished": counts == ref_counts, "steps_redone": None,
            "time_lost_s": round(wall - ref_s, 1), "max_weight_diff": max(diffs) if diffs else None,
            "last_line": "" if counts == ref_counts else f"counts {counts} != {ref_counts}"}


def print_table(rows: list[dict]) -> None:
    print("| process killed | kills | at step | finished by itself | finished | steps redone | time lost (s) | "
          "largest weight difference |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = "–" if r["max_weight_diff"] is None else f"{r['max_weight_diff']:.1e}"
        yes = lambda flag: "yes" if flag else "no"  # noqa: E731
        print(f"| {r['kind']} | {r['killed']} | {r['kill_at_step'] or '–'} | {yes(r['finished_by_itself'])}"
              f" | {yes(r['finished'])} | {'–' if r['steps_redone'] is None else r['steps_redone']} | "
              f"{r['time_lost_s']} | {diff} |")
    for r in rows:
        if r["last_line"]:
            print(f"{r['kind']}: last line: {r['last_line']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--checkpoint-every", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="draws the step of each kill")
    ap.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    ap.add_argument("--out", default="outputs/chaos")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    from tspo_ray.synthetic.dataset import build_world

    out = Path(args.out).absolute()
    args.out = str(out)
    world = out / "world"
    if not (world / "train.jsonl").exists():
        build_world(world, {"train": 6, "val": 1, "test": 1}, seed=3, min_s=60, max_s=90, workers=1, progress=False)
    ray = init_ray("local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    store = out / "features"
    rng = random.Random(args.seed)
    ref_dir = out / "uninterrupted"
    ref_dir.mkdir(parents=True, exist_ok=True)
    run_job(job_command(world, out / "warmup", store, 1, 1), env, ref_dir / "warmup.log")  # features, once
    t0 = time.perf_counter()
    assert run_job(job_command(world, ref_dir, store, args.steps, args.checkpoint_every), env,
                   ref_dir / "job.log") == 0, f"the uninterrupted job failed: see {ref_dir / 'job.log'}"
    ref_s = time.perf_counter() - t0
    reference = load_checkpoint(ref_dir / "run" / "checkpoints")
    print(f"uninterrupted: {args.steps} steps in {ref_s:.1f} s")
    rows = []
    for kind in args.kinds:
        kill_at = rng.randint(2, max(2, args.steps - 2))
        row = feature_case(args, world) if kind == "feature_worker" else training_case(
            kind, args, world, store, env, reference, ref_s, kill_at)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"uninterrupted_s": ref_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
