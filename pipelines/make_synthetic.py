"""Build the embedded long-video world: haystack videos with needle events and QA records per split.

    uv run python pipelines/make_synthetic.py [--out data/synthetic] [--seed 0] [--train-videos 130]
        [--val-videos 18] [--test-videos 45] [--workers 2]

Writes under --out: videos/<split>-NNNN.mp4 (MPEG-4, 128 px, 2 fps, 2-8 min), {train,val,test}.jsonl (QA records;
`video` is relative to the JSONL's folder), plans/<split>.jsonl (the ground-truth timelines),
quarantine.jsonl (videos that failed, with the reason; the rest goes on) and manifest.json (settings and counts).
Deterministic by --seed; complete, current videos are kept on a rerun (resumable); every file is written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tspo_ray.data.records import write_jsonl_atomic, write_text_atomic  # noqa: E402
from tspo_ray.synthetic.build import SPLITS, VideoJob, build_video  # noqa: E402
from tspo_ray.synthetic.stats import balance, uniform_coverage  # noqa: E402
from tspo_ray.synthetic.world import WorldSettings  # noqa: E402
from tspo_ray.synthetic.writer import CODEC  # noqa: E402


def run_jobs(jobs: list[VideoJob], workers: int, progress: bool) -> list[dict]:
    """build_video over the jobs (in a process pool when workers > 1), results in job order."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(build_video(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(build_video, jobs):
                results.append(result)
                bar.update()
    bar.close()
    return results


def build_world(out: str | Path, counts: dict[str, int], seed: int = 0, min_s: float = 120, max_s: float = 480,
                fps: int = 2, size: int = 128, workers: int = 2, progress: bool = True,
                settings: WorldSettings | None = None) -> dict:
    """Build (or complete) the world under `out` with counts[split] videos per split; returns the manifest.

    `settings` overrides min_s/max_s/fps/size when given.
    """
    out = Path(out)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; known: {SPLITS}")
    settings = settings or WorldSettings(fps=fps, size=size, min_s=min_s, max_s=max_s)
    t0 = time.time()
    jobs = [VideoJob(str(out), split, i, seed, settings) for split in SPLITS for i in range(counts.get(split, 0))]
    results = run_jobs(jobs, workers, progress)
    manifest = {"seed": seed, "settings": settings.to_dict(), "codec": CODEC, "pix_fmt": "yuv420p",
                "video_seed": "(seed * 3 + split index [train, val, test]) * 1e6 + video index", "splits": {}}
    quarantined = [{"video": r["video_id"], "reason": r["error"]} for r in results if r["status"] == "failed"]
    for split in SPLITS:
        rows = [r for r in results if r["split"] == split]
        if split not in counts:
            continue
        records = [q for r in rows for q in r["records"]]
        write_jsonl_atomic(out / "plans" / f"{split}.jsonl", [r["plan"] for r in rows if r["status"] != "failed"])
        write_jsonl_atomic(out / f"{split}.jsonl", records)
        durations = [r["plan"]["duration_s"] for r in rows]
        manifest["splits"][split] = {
            "videos": sum(r["status"] != "failed" for r in rows), "failed": sum(r["status"] == "failed" for r in rows),
            "questions": len(records), "hours": round(sum(durations) / 3600, 2),
            **balance(records), "uniform_8_of_128": uniform_coverage(records, settings.fps, k=8),
        }
    write_jsonl_atomic(out / "quarantine.jsonl", quarantined)
    manifest["videos_written"] = sum(r["status"] == "written" for r in results)
    manifest["videos_kept"] = sum(r["status"] == "kept" for r in results)
    manifest["build_seconds"] = round(time.time() - t0, 1)
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def format_table(manifest: dict) -> str:
    """Counts per split and family, and the share of questions uniform 8-of-128 sampling sees any target of."""
    families = sorted({f for s in manifest["splits"].values() for f in s["families"]})
    head = f"{'split':<6} {'videos':>6} {'failed':>6} {'hours':>6} {'questions':>9} " + " ".join(
        f"{f:>16}" for f in families)
    lines = [head, "-" * len(head)]
    for split, s in manifest["splits"].items():
        lines.append(f"{split:<6} {s['videos']:>6} {s['failed']:>6} {s['hours']:>6} {s['questions']:>9} "
                     + " ".join(f"{s['families'].get(f, 0):>16}" for f in families))
    for split, s in manifest["splits"].items():
        cov = s["uniform_8_of_128"]
        lines.append(f"{split}: uniform 8-of-128 hits a target span in "
                     + ", ".join(f"{f} {v['hit_rate']:.0%}" for f, v in cov.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/synthetic", help="dataset root")
    ap.add_argument("--seed", type=int, default=0, help="world seed (every video's seed derives from it)")
    ap.add_argument("--train-videos", type=int, default=130)
    ap.add_argument("--val-videos", type=int, default=18)
    ap.add_argument("--test-videos", type=int, default=45)
    ap.add_argument("--min-seconds", type=float, default=120, help="shortest video")
    ap.add_argument("--max-seconds", type=float, default=480, help="longest video")
    ap.add_argument("--workers", type=int, default=2, help="video-writing processes")
    args = ap.parse_args(argv)
    counts = {"train": args.train_videos, "val": args.val_videos, "test": args.test_videos}
    manifest = build_world(args.out, counts, args.seed, args.min_seconds, args.max_seconds, workers=args.workers)
    print("\n" + format_table(manifest))
    print(f"{manifest['videos_written']} videos written, {manifest['videos_kept']} kept, "
          f"in {manifest['build_seconds']} s -> {args.out}")
    failed = sum(s["failed"] for s in manifest["splits"].values())
    if failed:
        print(f"{failed} videos quarantined: see {Path(args.out) / 'quarantine.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
