"""Build the embedded long-video world: haystack videos with needle events and QA records per split.

    uv run python pipelines/make_synthetic.py [--out data/synthetic] [--seed 0] [--train-videos 130]
        [--val-videos 18] [--test-videos 45] [--workers 2] [--families FILE ...]

Writes under --out: videos/<split>-NNNN.mp4 (MPEG-4, 128 px, 2 fps, 2-8 min), {train,val,test}.jsonl (QA records;
`video` is relative to the JSONL's folder), plans/<split>.jsonl (the ground-truth timelines),
quarantine.jsonl (videos that failed, with the reason; the rest goes on) and manifest.json (settings, counts and a
copy of every question family file, docs/families.md).
Deterministic by --seed; complete, current videos are kept on a rerun (resumable); every file is written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tspo_ray.synthetic.dataset import build_world, format_table
from tspo_ray.synthetic.families import FamilyError


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
    ap.add_argument("--families", nargs="+", metavar="FILE",
                    help="question family files (docs/families.md; default: tspo_ray/synthetic/families/*.yaml)")
    args = ap.parse_args(argv)
    counts = {"train": args.train_videos, "val": args.val_videos, "test": args.test_videos}
    try:
        manifest = build_world(args.out, counts, args.seed, args.min_seconds, args.max_seconds, workers=args.workers,
                               families=args.families)
    except FamilyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_table(manifest))
    print(f"{manifest['videos_written']} videos written, {manifest['videos_kept']} kept, "
          f"in {manifest['build_seconds']} s -> {args.out}")
    failed = sum(s["failed"] for s in manifest["splits"].values())
    if failed:
        print(f"{failed} videos quarantined: see {Path(args.out) / 'quarantine.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
