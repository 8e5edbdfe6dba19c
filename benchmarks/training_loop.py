"""The Ray training loop beside the single-process loop it wraps: steps/s, machine CPU use, and the same weights.

    uv run python benchmarks/training_loop.py [--steps 120] [--warmup 80] [key=value ...]

Both loops train the same config on the embedded world's training split (features are extracted into the store
once if missing) for `--steps` learner steps, one after the other in this run:

- one process: `tspo_ray.training.trainer.train_single_process`, the embedded answerer in this process;
- Ray: `tspo_ray.distributed.training.train_distributed` on a private local Ray (rollout coordinator, answerer
  actors, Ray Train learner), as `jobs/train.py` runs it.

Steps/s come from the MLflow metric timestamps, start-up excluded (the wall time with start-up is printed too):
steady state over steps warmup..steps, and the first steps 4..warmup apart, where the answerers decode most frames
for the first time (an epoch of the embedded training split, 2,340 questions, is 73 steps). CPU use is the whole
machine's busy fraction over each phase (/proc/stat), so other load on the machine shows in it. Every process of
both loops runs train.torch_threads torch threads (1 by default; torch's default of one per core made the
single-process loop 10x slower on a loaded machine, docs/scaling.md). Both loops run the same schedule, so their
final weights must agree; the largest difference is printed as a check.

The one-process loop runs again after Ray, and the ratios divide by the faster of its two runs: on a shared
machine one run of it moved between 4.4 and 6.0 steps/s (docs/scaling.md), and the faster one is the conservative
base. --ray-also +OVERRIDE ... adds a second Ray run with those overrides on top, each written with a leading +
(e.g. --ray-also +train.num_coordinators=1), side by side in the same run.

With --corun, the one-process loop also runs as two copies at once (two processes, each its own tmp dir): each
copy's steady steps/s against the loop alone is what this machine gives each of two busy processes, so twice that
ratio bounds any split of the loop over two processes here, Ray's included, before a cost of Ray's own.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def metric_history(tracking_uri: str, name: str) -> list:
    """Every logged value of one metric of the phase's (only) MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0]
    return client.get_metric_history(run.info.run_id, name)


def steps_per_s(tracking_uri: str, first: int, last: int | None = None) -> float:
    """Learner steps per second between steps `first` and `last` (None: the last logged), from the MLflow metric
    timestamps."""
    points = sorted((m.step, m.timestamp) for m in metric_history(tracking_uri, "reward"))
    (s0, t0) = next(p for p in points if p[0] >= first)
    (s1, t1) = points[-1] if last is None else [p for p in points if p[0] <= last][-1]
    return (s1 - s0) / max((t1 - t0) / 1000, 1e-9)


PHASES = ("time_sample_s", "time_answer_s", "time_learn_s", "time_wait_s", "time_bookkeeping_s", "time_broadcast_s")
PHASE_NAMES = ("sampling", "answering", "learner update", "learner waits", "metrics + checkpoint", "weight broadcast")


def phase_means(tracking_uri: str, warmup: int) -> dict[str, float]:
    """Mean seconds per steady-state step of each phase the loop logs (PHASES); absent ones are left out."""
    out = {}
    for name in PHASES:
        values = [m.value for m in metric_history(tracking_uri, name) if m.step >= warmup]
        if values:
            out[name] = sum(values) / len(values)
    return out


def run_phase(name: str, train, cfg, items, tmp: Path, warmup: int) -> dict:
    from tspo_ray.training.tracking import RunLogger

    cfg.train.output_dir = str(tmp / name)
    uri = f"sqlite:///{tmp / name}.db"
    tracker = RunLogger.create(uri, "bench")
    b0, all0 = cpu_jiffies()
    t0 = time.perf_counter()
    train(cfg, items, tracker)
    wall = time.perf_counter() - t0
    b1, all1 = cpu_jiffies()
    tracker.finish()
    # the first steps decode most frames for the first time; from `warmup` on, the answerers' caches are warm
    return {"loop": name, "steps_per_s": steps_per_s(uri, warmup), "cold_steps_per_s": steps_per_s(uri, 4, warmup),
            "wall_s": wall, "cpu_busy": (b1 - b0) / max(all1 - all0, 1), "phases": phase_means(uri, warmup)}


def _corun_copy(cfg_dict: dict, items, tmp: str, warmup: int, queue) -> None:
    """One copy of the one-process loop for --corun, in its own process."""
    from tspo_ray.config import Config
    from tspo_ray.training.trainer import train_single_process

    row = run_phase("copy", lambda c, i, t: train_single_process(c, i, t, progress=False), Config.load(cfg_dict),
                    items, Path(tmp), warmup)
    queue.put(row["steps_per_s"])


def corun(cfg, items, tmp: Path, warmup: int) -> list[float]:
    """Steady steps/s of each of two copies of the one-process loop run at once."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = []
    for k in range(2):
        (tmp / f"copy{k}").mkdir()
        procs.append(ctx.Process(target=_corun_copy, args=(cfg.to_dict(), items, str(tmp / f"copy{k}"), warmup, queue)))
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=80, help="steps left out of the steady-state rate")
    ap.add_argument("--corun", action="store_true",
                    help="also run two copies of the one-process loop at once: what the machine gives two processes")
    ap.add_argument("--ray-also", nargs="+", default=[], metavar="+OVERRIDE",
                    help="a second Ray run with these overrides on top of the others, each with a leading +")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_lag=2 train.num_answerers=3")
    from tspo_ray.config import parse_job_args

    args = parse_job_args(ap)
    import os

    import torch

    from tspo_ray.checkpoint import load_checkpoint
    from tspo_ray.config import load_config
    from tspo_ray.distributed import init_ray
    from tspo_ray.distributed.training import train_distributed
    from tspo_ray.splits import prepare_split
    from tspo_ray.synthetic.dataset import ensure_world
    from tspo_ray.training.trainer import train_single_process
    from tspo_ray.video.encoders import load_encoder

    root = Path(__file__).resolve().parents[1]
    def config_with(*extra: str):
        return load_config(root / "configs" / "embedded.yaml",
                           [f"train.steps={args.steps}", "train.checkpoint_every=1000", *args.overrides, *extra])

    cfg = config_with()
    ensure_world(cfg)
    items, _, _ = prepare_split(cfg, "train", load_encoder(cfg.features.encoder))
    print(f"{len(items)} training questions; {cfg.train.questions_per_step} questions x G={cfg.policy.group_size} "
          f"per step, max_lag {cfg.train.max_lag}, {cfg.train.num_answerers} answerer actors, "
          f"{os.cpu_count()} CPUs, train.torch_threads {cfg.train.torch_threads} in every process of both loops "
          f"(0: torch's default, {torch.get_num_threads()} here), load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_process = lambda c, i, t: train_single_process(c, i, t, progress=False)  # noqa: E731
        rows.append(run_phase("one process", one_process, cfg, items, tmp, args.warmup))
        init_ray("local", num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        rows.append(run_phase("Ray", train_distributed, cfg, items, tmp, args.warmup))
        if args.ray_also:
            extra = [o.removeprefix("+") for o in args.ray_also]
            rows.append(run_phase("Ray also", train_distributed, config_with(*extra), items, tmp, args.warmup)
                        | {"loop": f"Ray, {' '.join(extra)}"})
        rows.append(run_phase("one process, again", one_process, cfg, items, tmp, args.warmup))
        rates = corun(cfg, items, tmp, args.warmup) if args.corun else []
        a = load_checkpoint(tmp / "one process" / "checkpoints")["agent"]
        b = load_checkpoint(tmp / "Ray" / "checkpoints")["agent"]
        max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    ones = [r for r in rows if r["loop"].startswith("one process")]
    base = max(r["steps_per_s"] for r in ones)  # the faster run of the one-process loop: the conservative base
    cold = max(r["cold_steps_per_s"] for r in ones)
    print("\n(÷ one process: against the faster of the one-process loop's two runs)")
    print(f"\n| loop | steps/s, steps {args.warmup}-{args.steps} | ÷ one process | steps/s, steps 4-{args.warmup} "
          "| ÷ one process | wall incl. start-up | machine CPU busy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['loop']} | {r['steps_per_s']:.2f} | {r['steps_per_s'] / base:.2f}x | "
              f"{r['cold_steps_per_s']:.2f} | {r['cold_steps_per_s'] / cold:.2f}x | {r['wall_s']:.1f} s | "
              f"{100 * r['cpu_busy']:.0f}% |")
    print("\nwhere a steady-state step's time goes (mean ms per step; on Ray, sampling and answering batch b+1 "
          "overlap the learner's update of batch b, and 'learner waits' is the learner idle for a rollout; "
          "'metrics + checkpoint' is the MLflow logging and checkpointing after a step)")
    print(f"\n| loop | step | {' | '.join(PHASE_NAMES)} |")
    print("|---|---:|" + "---:|" * len(PHASES))
    for r in rows:
        cells = " | ".join(f"{1e3 * r['phases'][p]:.0f}" if p in r["phases"] else "-" for p in PHASES)
        print(f"| {r['loop']} | {1e3 / r['steps_per_s']:.0f} | {cells} |")
    if rates:
        each = [r / base for r in rates]
        print(f"\ntwo copies of the one-process loop at once: {rates[0]:.2f} and {rates[1]:.2f} steps/s, each "
              f"{min(each):.2f}-{max(each):.2f}x the loop alone; so two busy processes here do at most "
              f"{sum(each):.2f}x the work of one (the ceiling of a two-process split on this machine)")
    print(f"\nfinal weights, largest |difference| between the loops: {max_diff:.2e} (same schedule, same config); "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
