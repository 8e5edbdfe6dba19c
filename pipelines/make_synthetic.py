"""Build the embedded long-video world: haystack videos with needle events and QA records per split.

    uv run python pipelines/make_synthetic.py [--out data/synthetic] [--train-videos 140 --val-videos 16 --test-videos 60]

Writes <out>/videos/<split>-NNNN.mp4, <out>/{train,val,test}.jsonl (video paths relative to <out>),
<out>/plans/<split>.jsonl (the ground-truth timelines) and <out>/manifest.json. Deterministic by --seed; videos
already written are kept (resumable); every file is written atomically.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tspo_ray.data.records import write_jsonl_atomic, write_text_atomic  # noqa: E402
from tspo_ray.synthetic.world import make_questions, plan_video  # noqa: E402
from tspo_ray.synthetic.writer import write_video  # noqa: E402

SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def video_seed(seed: int, split: str, index: int) -> int:
    return seed * 10_000_000 + SPLIT_OFFSETS[split] * 1_000_000 + index


def build_one(args: tuple) -> tuple[dict, list[dict]]:
    out, split, index, seed, min_s, max_s, fps, size = args
    vid = f"{split}-{index:04d}"
    rng = random.Random(video_seed(seed, split, index))
    plan = plan_video(vid, rng, min_s=min_s, max_s=max_s)
    rel = f"videos/{vid}.mp4"
    path = Path(out) / rel
    if not path.exists():
        write_video(plan, path, fps=fps, size=size, seed=video_seed(seed, split, index))
    return plan.to_dict(), make_questions(plan, rel, rng)


def build_world(out: str | Path, counts: dict[str, int], seed: int = 0, min_s: float = 120, max_s: float = 480,
                fps: int = 2, size: int = 128, workers: int = 2, progress: bool = True) -> dict:
    from tqdm import tqdm

    out = Path(out)
    t0 = time.time()
    manifest = {"seed": seed, "fps": fps, "frame_size": size, "duration_s": [min_s, max_s], "splits": {}}
    jobs = [(str(out), split, i, seed, min_s, max_s, fps, size) for split, n in counts.items() for i in range(n)]
    results: dict[str, list] = {split: [] for split in counts}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for job, result in tqdm(zip(jobs, pool.map(build_one, jobs)), total=len(jobs), desc="videos",
                                disable=not progress):
            results[job[1]].append(result)
    for split, rows in results.items():
        plans = [plan for plan, _ in rows]
        records = [r for _, qs in rows for r in qs]
        write_jsonl_atomic(out / "plans" / f"{split}.jsonl", plans)
        write_jsonl_atomic(out / f"{split}.jsonl", records)
        manifest["splits"][split] = {"videos": len(plans), "questions": len(records),
                                     "families": dict(Counter(r["meta"]["family"] for r in records))}
    manifest["build_seconds"] = round(time.time() - t0, 1)
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-videos", type=int, default=140)
    ap.add_argument("--val-videos", type=int, default=16)
    ap.add_argument("--test-videos", type=int, default=60)
    ap.add_argument("--min-seconds", type=float, default=120)
    ap.add_argument("--max-seconds", type=float, default=480)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    manifest = build_world(args.out, {"train": args.train_videos, "val": args.val_videos, "test": args.test_videos},
                           args.seed, args.min_seconds, args.max_seconds, workers=args.workers)
    families = sorted({f for s in manifest["splits"].values() for f in s["families"]})
    print(f"\n{'split':<6} {'videos':>6} {'questions':>9} " + " ".join(f"{f:>16}" for f in families))
    for split, s in manifest["splits"].items():
        print(f"{split:<6} {s['videos']:>6} {s['questions']:>9} " + " ".join(f"{s['families'].get(f, 0):>16}" for f in families))
    print(f"built in {manifest['build_seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
