"""Rollout throughput, synchronous vs decoupled, and feature-pipeline throughput, Ray Data vs one process.

    uv run python benchmarks/rollout_throughput.py [--steps 6] [--videos 16]

Part 1 runs the same learner loop twice on the embedded world (features must exist: run jobs/train.py or
pipelines/extract_features.py first): max_lag=0 (sample, answer, then learn) and max_lag=1 (the next batch is
answered while the learner updates). Part 2 encodes the same videos into fresh stores with the single-process loop
and with the Ray Data pipeline (2 workers). Figures are measured side by side in one run.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rollout_groups_per_s(coordinator, items, cfg, max_lag: int, steps: int) -> float:
    import ray
    import torch

    from tspo_ray.distributed.training import batch_plan, batch_seed
    from tspo_ray.learner import learner_step
    from tspo_ray.trainer import build_agent

    torch.manual_seed(0)
    agent = build_agent(cfg, items[0].frame_features.shape[-1])
    opt = torch.optim.Adam(agent.parameters(), lr=cfg.grpo.lr)
    plan = batch_plan(len(items), 0, cfg.train.questions_per_step, steps)
    in_flight, nxt, groups = collections.deque(), 0, 0
    t0 = time.perf_counter()
    for step in range(steps):
        while nxt < steps and nxt <= step + max_lag:
            weights = ray.put(agent.state_dict())
            in_flight.append(coordinator.rollout.remote(plan[nxt], step, weights, 0.02, batch_seed(0, nxt)))
            nxt += 1
        out = ray.get(in_flight.popleft())
        learner_step(agent, opt, out["items"], out["groups"], tau=0.02, likelihood="plackett_luce", clip_eps=0.2,
                     epochs=cfg.grpo.epochs, current_version=step)
        groups += len(out["groups"])
    return groups / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import ray

    from tspo_ray.answerers import AnswererFactory
    from tspo_ray.config import load_config
    from tspo_ray.distributed import init_ray
    from tspo_ray.distributed.feature_pipeline import extract_with_ray
    from tspo_ray.distributed.training import RolloutCoordinator
    from tspo_ray.encoders import load_encoder
    from tspo_ray.features import FeatureStore, extract_local, feature_spec, prepare_split, resolve_video

    cfg = load_config(overrides=args.overrides)
    init_ray("local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    encoder = load_encoder(cfg.features.encoder)
    items, _, _ = prepare_split(cfg, "train", encoder, progress=False)
    pool = {"answerer_factory": AnswererFactory("embedded"), "num_actors": 2, "num_cpus": 0.5}
    coord = ray.remote(num_cpus=0.1, max_concurrency=3)(RolloutCoordinator).remote(
        items, {"dim": encoder.dim, "window": 12, "heads": 8, "hidden": encoder.dim}, pool, cfg.policy.group_size,
        cfg.policy.num_frames, cfg.policy.likelihood)
    rollout_groups_per_s(coord, items, cfg, 0, 1)  # warm-up: actors up, CLIP loaded
    sync = rollout_groups_per_s(coord, items, cfg, 0, args.steps)
    decoupled = rollout_groups_per_s(coord, items, cfg, 1, args.steps)
    print(f"rollout+learn groups/s  synchronous (max_lag=0): {sync:.2f}   decoupled (max_lag=1): {decoupled:.2f}"
          f"   ratio {decoupled / sync:.2f}x")

    records = [r for r in items][: args.videos * 10]
    videos = list(dict.fromkeys(resolve_video(r.record, cfg.data.root) for r in records))[: args.videos]
    spec = feature_spec(cfg, encoder.name)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract_local(videos, encoder, spec, FeatureStore(Path(tmp) / "local"), progress=False)
        local_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = extract_with_ray(videos, asdict(cfg.features.encoder), spec, FeatureStore(Path(tmp) / "ray"),
                                  num_workers=2, cpus_per_worker=1.0, progress=False)
        ray_s = time.perf_counter() - t0
    frames = counts["frames"]
    print(f"feature pipeline frames/s  one process: {frames / local_s:.0f}   Ray Data (2 workers): {frames / ray_s:.0f}"
          f"   ratio {local_s / ray_s:.2f}x   ({len(videos)} videos, {frames} frames)")
    ray.shutdown()


if __name__ == "__main__":
    main()
