"""Training throughput from 1 to 64 answerers: the Ray loop against simulated Video-MLLM answerers.

    uv run python benchmarks/scale.py [--answerers 1 2 4 8 16 32 64] [--time-scale 1] [--variants ...]

Each run is `tspo_ray.distributed.training.train_distributed` as jobs/train.py runs it (rollout coordinator, answerer
pool, Ray Train learner) on one private local Ray, with `answerer.kind: simulated`: the embedded answerer's answers
(real rewards of the frames chosen) returned after the latency of a 7B Video-MLLM on vLLM on one GPU
(tspo_ray/answerers/simulated.py, its figures cited there), times --time-scale, 16 simulated GPUs per actor
process. The world is a small embedded one built in a temp dir (--videos training videos), its features extracted
with the shipped tiny CLIP.

Per N it prints learner steps/s and questions/s after --warmup steps (MLflow metric timestamps, start-up left out),
the efficiency against N x the one-answerer rate (the first variant's rate at the smallest N), and where a step's time goes (ms per step:
sampling and answering, which overlap the learner, the learner's update, its wait for a rollout, the weight
broadcast; the simulated answerers' inner compute and overrun summed over the batch's calls; object-store KB per
step). A second table splits each batch's answering time outside the answerer actors: the coordinator preparing
the requests, sending the calls, Ray's delivery of the calls and their answers, the answers turned into rewards.
`limit` says `box` where the calls overran their modelled GPU time by more than 5% of it: there this
machine's CPUs, not the design, set the pace. The learner keeps up while it still waits for rollouts (wait >= 10% of the
step): past that N, more answerers buy nothing. Variants run side by side in this one run:

- `pinned`: the default pool, 4 questions a call, each video's questions pinned to one answerer;
- `spread`: train.jobs_per_call=0, each batch sorted by video and cut into equal calls over its share of the
  answerers, pins only preferred;
- `spread-lag2`: the same at train.max_lag=2;
- `spread-2c`: `spread` with train.num_coordinators=2, each batch sampled, sent and collected by one of two rollout
  coordinators with half the answerers (from N = 2).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import psutil

VARIANTS = {
    "pinned": [],
    "spread": ["train.jobs_per_call=0"],
    "spread-lag2": ["train.jobs_per_call=0", "train.max_lag=2"],
    "spread-2c": ["train.jobs_per_call=0", "train.num_coordinators=2"],
}
PHASES = ("time_sample_s", "time_answer_s", "time_learn_s", "time_wait_s", "time_broadcast_s")
#: the simulated answerers' inner compute, modelled GPU time and overrun, summed over a batch's calls
ANSWERING = ("time_answer_compute_s", "time_answer_modelled_s", "time_answer_overrun_s")
#: a batch's time in the coordinator outside the answerer actors (AnswererPool.score): preparing the requests and
#: the cut, sending the calls, Ray's delivery (summed over calls: round trip less the actor's own time), answers to
#: rewards; and the calls a batch made
OUTSIDE = ("time_answer_pool_prepare_s", "time_answer_pool_submit_s", "time_answer_pool_delivery_s",
           "time_answer_pool_rewards_s", "answer_pool_calls")
#: a run whose calls overran their modelled time by more than this share of it is limited by the box
BOX_LIMIT = 0.05
#: a batch answered this much slower than the latency model's schedule of its calls lost time outside the calls
OUTSIDE_LIMIT = 0.10
BYTES = ("store_weight_bytes", "store_result_bytes")


def metric_values(uri: str, name: str, first: int) -> list[tuple[int, int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("scale").experiment_id])[0]
    return sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, name)
                  if m.step >= first)


def measure(uri: str, warmup: int) -> dict:
    points = metric_values(uri, "reward", warmup)
    (s0, t0, _), (s1, t1, _) = points[0], points[-1]
    out = {"steps_per_s": (s1 - s0) / max((t1 - t0) / 1000, 1e-9)}
    for name in PHASES + ANSWERING + BYTES + OUTSIDE:
        values = [v for _, _, v in metric_values(uri, name, warmup + 1)]
        out[name] = sum(values) / max(len(values), 1)
    return out


def steps_for(n: int, args) -> int:
    """Enough steps for a rate: few where each takes long (N small), more where they are quick."""
    return min(args.max_steps, args.warmup + 4 + n // 2)


def run_one(cfg_overrides: list[str], n: int, steps: int, tmp: Path, name: str, args) -> dict:
    from tspo_ray.config import load_config
    from tspo_ray.distributed.training import train_distributed
    from tspo_ray.training.tracking import RunLogger

    settings = (f"{{inner_settings: {{}}, time_scale: {args.time_scale}, "
                f"gpus_per_actor: {min(n, args.gpus_per_actor)}}}")
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "embedded.yaml", [
        f"data.root={tmp / 'world'}", f"features.store={tmp / 'features'}", "answerer.kind=simulated",
        f"answerer.settings={settings}", f"train.num_answerers={n}", f"train.steps={steps}",
        "train.checkpoint_every=100000", "train.eval_every=0", "train.answerer_cpus=0.25",
        f"train.output_dir={tmp / name}", *cfg_overrides])
    uri = f"sqlite:///{tmp / name}.db"
    tracker = RunLogger.create(uri, "scale")
    t0 = time.perf_counter()
    cpu0 = psutil.cpu_times()
    train_distributed(cfg, args.items, tracker)
    cpu1 = psutil.cpu_times()
    tracker.finish()
    row = measure(uri, args.warmup)
    busy = sum(getattr(cpu1, f) - getattr(cpu0, f) for f in ("user", "system", "nice"))
    total = sum(cpu1) - sum(cpu0)
    # the machine's cores busy over the whole run: near 100% means the CPUs, not the design, set the pace
    row.update(n=n, wall_s=time.perf_counter() - t0, steps=steps, questions=cfg.train.questions_per_step,
               cpu_busy=busy / max(total, 1e-9))
    return row


def modelled_rate(args, cfg) -> float:
    """Steps/s of one simulated answerer by the latency model alone: a step's questions in calls of 4."""
    from tspo_ray.answerers.simulated import SimulatedSettings

    lat = SimulatedSettings.load({"time_scale": args.time_scale}).latency()
    calls = math.ceil(cfg.train.questions_per_step / 4)
    return 1 / (calls * lat.seconds([cfg.policy.num_frames] * (4 * cfg.policy.group_size)))


def box_share(row: dict) -> float:
    """The share of the modelled answering time by which calls overran it: this machine's CPUs, not the design."""
    return row.get("time_answer_overrun_s", 0.0) / max(row.get("time_answer_modelled_s", 0.0), 1e-9)


def print_table(variant: str, rows: list[dict], one_answerer: float) -> None:
    base = one_answerer
    print(f"\n{variant}\n")
    print("| N | steps/s | questions/s | efficiency | sampling | answering | update | learner waits | broadcast "
          "| inner compute | overrun | weights KB/step | results KB/step | CPUs busy | learner keeps up | limit |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|")
    for r in rows:
        step_ms = 1e3 / r["steps_per_s"]
        keeps_up = 1e3 * r["time_wait_s"] >= 0.1 * step_ms
        box = box_share(r)
        beyond = r["time_answer_s"] / r["scheduled_answer_s"] - 1 if r.get("scheduled_answer_s") else 0.0
        limit = (f"box ({100 * box:.0f}% overrun)" if box > BOX_LIMIT
                 else f"outside the calls (+{100 * beyond:.0f}%)" if beyond > OUTSIDE_LIMIT else "design")
        print(f"| {r['n']} | {r['steps_per_s']:.2f} | {r['steps_per_s'] * r['questions']:.1f} | "
              f"{100 * r['steps_per_s'] / (r['n'] * base):.0f}% | "
              + " | ".join(f"{1e3 * r[p]:.0f}" for p in ("time_sample_s", "time_answer_s", "time_learn_s",
                                                        "time_wait_s", "time_broadcast_s",
                                                        "time_answer_compute_s", "time_answer_overrun_s"))
              + f" | {r['store_weight_bytes'] / 1e3:.0f} | {r['store_result_bytes'] / 1e3:.0f} | "
              f"{100 * r['cpu_busy']:.0f}% | "
              f"{'yes' if keeps_up else 'no'} | {limit} |")
    print_outside(rows)
    up = [r["n"] for r in rows if 1e3 * r["time_wait_s"] >= 0.1e3 / r["steps_per_s"]]
    print(f"\nlargest N where the learner keeps up: {max(up) if up else 'none'}")
    boxed = [r["n"] for r in rows if box_share(r) > BOX_LIMIT]
    if boxed:
        print(f"the box, not the design, limits N = {', '.join(map(str, boxed))}: the simulated answerers' calls "
              f"overran their modelled GPU time by more than {100 * BOX_LIMIT:.0f}% (inner compute on this machine's "
              f"CPUs); those rows understate the design")
    outside = [r["n"] for r in rows if r.get("scheduled_answer_s")
               and r["time_answer_s"] > (1 + OUTSIDE_LIMIT) * r["scheduled_answer_s"] and box_share(r) <= BOX_LIMIT]
    if outside:
        print(f"at N = {', '.join(map(str, outside))} the calls kept to their modelled time, yet a batch took more than "
              f"{100 * OUTSIDE_LIMIT:.0f}% longer than the model's schedule of them: the time went outside the calls "
              f"(Ray's dispatch and collection of the batch's calls, the coordinator's scoring)")


def print_outside(rows: list[dict]) -> None:
    """Where a batch's answering time went outside the answerer actors, in the coordinator (ms per batch)."""
    print("\nthe answering time outside the actors, ms per batch: the coordinator preparing the requests and the cut, "
          "sending the calls, Ray's delivery (summed over the calls: each call's round trip less its time in the "
          "actor), the answers turned into rewards; beyond the schedule: measured answering less the latency model's "
          "schedule of the calls\n")
    print("| N | calls a batch | prepare | submit | delivery, all calls | delivery per call | answers to rewards "
          "| beyond the schedule |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        calls = r.get("answer_pool_calls", 0.0)
        beyond = (f"{1e3 * (r['time_answer_s'] - r['scheduled_answer_s']):.0f}" if r.get("scheduled_answer_s")
                  else "–")
        print(f"| {r['n']} | {calls:.1f} | "
              + " | ".join(f"{1e3 * r.get(k, 0.0):.0f}" for k in OUTSIDE[:3])
              + f" | {1e3 * r.get('time_answer_pool_delivery_s', 0.0) / max(calls, 1):.1f} | "
              f"{1e3 * r.get('time_answer_pool_rewards_s', 0.0):.0f} | {beyond} |")


def scheduled_batch_seconds(n: int, lag: int, questions: int, per_call: "Callable[[int], float]") -> tuple[float, float]:
    """(calls per batch, seconds to answer a batch) by the latency model alone, under the `spread` pool's cut: the
    batch's questions cut into share = n // (lag + 1) calls of equal size (tspo_ray.distributed.answerer_pool.
    equal_cut), one per answerer of the batch's share. per_call(q): seconds of a call of q questions. What the
    answering would take if nothing but the modelled GPUs cost time."""
    from tspo_ray.distributed.answerer_pool import equal_cut

    sizes = [b - a for a, b in equal_cut(questions, max(1, n // (lag + 1)))]
    return float(len(sizes)), max(per_call(q) for q in sizes)


def add_schedule(rows: list[dict], args, cfg, lag: int) -> None:
    """Each spread row's answering time by the latency model's schedule of its equal calls, where the batch has
    answerers of its own (N >= lag + 1; below that, batches in flight queue behind each other on the same ones)."""
    from tspo_ray.answerers.simulated import SimulatedSettings

    lat = SimulatedSettings.load({"time_scale": args.time_scale}).latency()
    frames, g = cfg.policy.num_frames, cfg.policy.group_size
    for r in rows:
        if r["n"] >= lag + 1:
            r["scheduled_answer_s"] = scheduled_batch_seconds(r["n"], lag, cfg.train.questions_per_step,
                                                              lambda q: lat.seconds([frames] * (g * q)))[1]


def print_schedule_model(answerers: list[int], args, cfg, measured: dict[int, float] | None = None) -> None:
    """The latency model's answering time of one batch at each N beside the measured one (spread, max_lag 1)."""
    from tspo_ray.answerers.simulated import SimulatedSettings

    lat = SimulatedSettings.load({"time_scale": args.time_scale}).latency()
    frames, g = cfg.policy.num_frames, cfg.policy.group_size
    print(f"\nanswering one batch by the latency model alone (spread, max_lag {cfg.train.max_lag}, equal calls): "
          "calls a batch, seconds; beside the measured\n")
    print("| N | calls a batch | modelled s | measured s |")
    print("|---:|---:|---:|---:|")
    for n in answerers:
        calls, secs = scheduled_batch_seconds(n, cfg.train.max_lag, cfg.train.questions_per_step,
                                              lambda q: lat.seconds([frames] * (g * q)))
        got = (measured or {}).get(n)
        print(f"| {n} | {calls:.1f} | {secs:.2f} | {'–' if got is None else f'{got:.2f}'} |")


def efficiency_at(rows: list[dict], n: int, one_answerer: float) -> tuple[int, float]:
    """(the measured N used, its efficiency) for n answerers: the largest measured N <= n (efficiency falls with N,
    so that is the optimistic side for n between two measurements; n = 8, 16, 64 are measured exactly)."""
    measured = [r for r in rows if r["n"] <= n] or rows[:1]
    r = max(measured, key=lambda r: r["n"])
    return r["n"], r["steps_per_s"] / (r["n"] * one_answerer)


def print_projection(rows: list[dict], one_answerer: float, variant: str, questions: int = 10_000,
                     group_size: int = 8) -> None:
    """The paper's run (TSPO-10K, one epoch, G = 8, T_s = 8 and 16, a 7B Video-MLLM answering) on 8, 16 and 64
    answering GPUs plus one learner GPU: the latency model's GPU-seconds per question over N x the measured
    efficiency at N."""
    from tspo_ray.answerers.simulated import LatencyModel

    model = LatencyModel()  # time_scale 1: the modelled GPU itself
    print(f"\nprojection: TSPO-10K ({questions:,} questions), one epoch, G = {group_size}, calls of 4 questions, "
          f"efficiency of `{variant}` measured above; one more GPU for the learner\n")
    print("| answering GPUs | efficiency used | T_s | GPU-s per question | hours | GPU-hours (answerers + learner) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for gpus in (8, 16, 64):
        at, eff = efficiency_at(rows, gpus, one_answerer)
        for frames in (8, 16):
            per_q = model.question_seconds(group_size, frames, questions_per_call=4)
            hours = questions * per_q / (gpus * eff) / 3600
            print(f"| {gpus} | {100 * eff:.0f}% (N={at}) | {frames} | {per_q:.2f} | {hours:.2f} | "
                  f"{hours * (gpus + 1):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answerers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="the simulated latency times this (1: the modelled GPU; smaller runs the sweep quicker)")
    ap.add_argument("--gpus-per-actor", type=int, default=16, help="simulated GPUs per answerer actor process")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the rate")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--videos", type=int, default=12, help="training videos of the small world")
    ap.add_argument("--one-answerer-rate", type=float,
                    help="steps/s of one answerer from an earlier run, for a run that starts past N = 1 (default: "
                         "this run's first variant at N = 1)")
    ap.add_argument("--pinned-up-to", type=int, default=64, help="the pinned variant runs up to this N")
    ap.add_argument("--model-only", action="store_true",
                    help="print only the latency model's answering time of a batch at each N (no Ray, seconds)")
    ap.add_argument("--lag2-from", type=int, default=8, help="the max_lag 2 variant runs from this N on")
    args = ap.parse_args()

    import os

    from tspo_ray.config import load_config
    from tspo_ray.distributed import init_ray
    from tspo_ray.splits import prepare_split
    from tspo_ray.synthetic.dataset import build_world
    from tspo_ray.video.encoders import load_encoder

    if args.model_only:
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "embedded.yaml", [])
        print_schedule_model(args.answerers, args, cfg)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_world(tmp / "world", {"train": args.videos, "val": 1, "test": 1}, seed=3, min_s=60, max_s=120,
                    workers=1, progress=False)
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "embedded.yaml",
                          [f"data.root={tmp / 'world'}", f"features.store={tmp / 'features'}"])
        args.items, _, _ = prepare_split(cfg, "train", load_encoder(cfg.features.encoder), progress=False)
        print(f"{len(args.items)} training questions on {args.videos} videos; {cfg.train.questions_per_step} "
              f"questions x G={cfg.policy.group_size} sets of T_s={cfg.policy.num_frames} a step; simulated latency "
              f"x{args.time_scale}; one answerer by the model alone: {modelled_rate(args, cfg):.3f} steps/s; "
              f"{os.cpu_count()} CPUs")
        init_ray("local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        tables = {}
        for n in args.answerers:  # variants side by side at each N, so machine load hits them alike
            for variant in args.variants:
                if (variant.endswith("lag2") and n < args.lag2_from or variant == "pinned" and n > args.pinned_up_to
                        or variant.endswith("2c") and n < 2):
                    continue
                if variant != args.variants[0] and n == args.answerers[0] == 1:
                    continue  # one answerer: every variant is the same pool (its one-answerer rate is the first's)
                row = run_one(VARIANTS[variant], n, steps_for(n, args), tmp, f"{variant}-{n}", args)
                tables.setdefault(variant, []).append(row)
                print(f"  {variant} N={n}: {row['steps_per_s']:.3f} steps/s ({row['steps']} steps, "
                      f"{row['wall_s']:.0f} s with start-up) {row}", flush=True)
        # efficiency against N x the one-answerer rate of the default pool (the same at N = 1 for every variant)
        if args.one_answerer_rate:
            rate = args.one_answerer_rate
        else:
            one = tables[args.variants[0]][0]
            rate = one["steps_per_s"] / one["n"]
        for variant, rows in tables.items():
            if VARIANTS[variant] and "train.jobs_per_call=0" in VARIANTS[variant]:
                add_schedule(rows, args, cfg, lag=2 if variant.endswith("lag2") else cfg.train.max_lag)
            print_table(variant, rows, rate)
        if "spread" in tables:
            print_schedule_model(args.answerers, args, cfg, {r["n"]: r["time_answer_s"] for r in tables["spread"]})
        # the projection uses the variant that scales best at the largest N measured
        best = max(tables, key=lambda v: (tables[v][-1]["n"], tables[v][-1]["steps_per_s"]))
        print_projection(tables[best], rate, best)


if __name__ == "__main__":
    main()
