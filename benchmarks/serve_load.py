"""Bounded HTTP load on the keyframe-selection service from a separate client process, on loopback.

    uv run python benchmarks/serve_load.py --video-root data/synthetic --concurrency 20 --duration 60

Starts the service on a local Ray (or targets --url), then runs two phases of `--duration` seconds each with
`--concurrency` clients looping POST /select:
  cached    questions on a few videos whose features were loaded before the phase (decode+encode skipped);
  uncached  every request names a (video, max_candidates) pair not seen before, so it decodes and encodes.
Reports requests/s, p50/p99 latency, the service's cache-hit ratio and the error count per phase (JSON).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import socket
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = ["When does the red star appear?", "What colour is the square?", "Where is the blue circle?",
             "How many times does the green triangle appear?", "What happens after the yellow star leaves?"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


async def run_phase(url: str, payloads, concurrency: int, duration_s: float) -> dict:
    """`concurrency` clients, each sending the next payload as soon as its previous answer arrives."""
    latencies, errors, hits = [], [], 0
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency)

    async def worker(client: httpx.AsyncClient):
        nonlocal hits
        while time.perf_counter() < deadline:
            body = next(payloads)
            t0 = time.perf_counter()
            try:
                resp = await client.post("/select", json=body)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code}: {resp.text[:200]}")
                    continue
                hits += int(resp.json()["timings_ms"]["cache_hit"])
                latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    n = len(latencies)
    return {"requests_ok": n, "errors": len(errors), "error_samples": errors[:3], "wall_s": round(wall, 1),
            "requests_per_s": round(n / wall, 2), "cache_hit_ratio": round(hits / max(n, 1), 3),
            "p50_ms": round(1000 * percentile(latencies, 50), 1) if n else None,
            "p99_ms": round(1000 * percentile(latencies, 99), 1) if n else None}


def payload_streams(videos: list[str], num_frames: int, seed: int = 0):
    """(warm-up payloads, cached stream, uncached stream): cached reuses 3 videos at the default T_c; uncached
    walks unseen (video, max_candidates) pairs."""
    rng = random.Random(seed)
    hot = videos[:3]
    warm = [{"video": v, "question": QUESTIONS[0], "num_frames": num_frames} for v in hot]

    def cached():
        for i in itertools.count():
            yield {"video": hot[i % len(hot)], "question": rng.choice(QUESTIONS), "num_frames": num_frames,
                   "method": rng.choice(["agent", "agent", "clip-top-k", "bin-max"])}

    def uncached():
        pairs = [(v, cap) for cap in range(127, 16, -1) for v in videos[3:]]
        for v, cap in pairs:
            yield {"video": v, "question": rng.choice(QUESTIONS), "num_frames": num_frames, "max_candidates": cap}
        raise RuntimeError("ran out of unseen (video, max_candidates) pairs; shorten --duration")

    return warm, cached(), uncached()


def start_service(video_root: str, checkpoint: str | None, replicas: int) -> str:
    from ray import serve

    from tspo_ray.distributed import init_ray
    from tspo_ray.serve.app import KeyframeSelector
    from tspo_ray.serve.service import ServeSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_ray("local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServeSettings(checkpoint=checkpoint, video_roots=[str(Path(video_root).resolve())], cache_size=512)
    serve.run(KeyframeSelector.options(num_replicas=replicas).bind(settings.to_dict()), name="tspo-select",
              route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video-root", default="data/synthetic")
    ap.add_argument("--url", help="an already running service (default: start one here)")
    ap.add_argument("--checkpoint")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--num-frames", type=int, default=8)
    args = ap.parse_args()
    root = Path(args.video_root)
    videos = sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))
    if len(videos) < 4:
        sys.exit(f"error: {root}: need at least 4 .mp4 videos (build some with pipelines/make_synthetic.py)")
    url = args.url or start_service(str(root), args.checkpoint, args.replicas)
    warm, cached, uncached = payload_streams(videos, args.num_frames)
    with httpx.Client(base_url=url, timeout=300) as client:
        for body in warm:
            client.post("/select", json=body).raise_for_status()
        info = client.get("/").json()
    report = {"url": url, "concurrency": args.concurrency, "duration_s_per_phase": args.duration,
              "model_version": info["model_version"], "encoder": info["encoder"], "replicas": args.replicas}
    for name, stream in (("cached", cached), ("uncached", uncached)):
        report[name] = asyncio.run(run_phase(url, stream, args.concurrency, args.duration))
    with httpx.Client(base_url=url, timeout=30) as client:
        report["batching"] = client.get("/").json()["batching"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
