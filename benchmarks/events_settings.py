"""The events selection method's settings, chosen on the validation split (never on a test split).

    uv run python benchmarks/events_settings.py [--split val] [--accept 0.2 0.35 0.5] [--run 0.3 0.5]

Evaluates clip:events over a grid of (accept, run) on the embedded world's validation split, next to the other
training-free selectors, and prints overall and per-family accuracy. The constants
tspo_ray.method.selection_methods.EVENTS_ACCEPT / EVENTS_RUN
hold the chosen pair (the best overall; ties go to the first in grid order).
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from tspo_ray.answerers import build_answerer, settings_for
from tspo_ray.config import BASELINE_SELECTORS, load_config
from tspo_ray.evaluation.accuracy import evaluate_selector, format_table, summarise
from tspo_ray.splits import prepare_split
from tspo_ray.video.encoders import load_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"))
    ap.add_argument("--split", default="val", choices=["train", "val"], help="the test split is not for tuning")
    ap.add_argument("--accept", type=float, nargs="+", default=[0.2, 0.35, 0.5])
    ap.add_argument("--run", type=float, nargs="+", default=[0.3, 0.5])
    args = ap.parse_args()
    cfg = load_config(args.config, [])
    items, _, _ = prepare_split(cfg, args.split, load_encoder(cfg.features.encoder))
    answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))
    k = cfg.eval.num_frames
    results = {sel: summarise(evaluate_selector(items, sel, k, answerer, progress=False))
               for sel in BASELINE_SELECTORS if sel != "clip:events"}
    grid = {}
    for accept in args.accept:
        for run in args.run:
            grid[(accept, run)] = summarise(evaluate_selector(items, "clip:events", k, answerer, progress=False,
                                                              params={"accept": accept, "run": run}))
            results[f"clip:events accept={accept} run={run}"] = grid[(accept, run)]
    print(f"{args.split} split, {len(items)} questions, k = {k}\n")
    print(format_table(results))
    best = max(grid, key=lambda key: grid[key]["accuracy"])  # max keeps the first of equals
    print(f"\nbest on {args.split}: accept={best[0]} run={best[1]} ({100 * grid[best]['accuracy']:.1f})")


if __name__ == "__main__":
    main()
