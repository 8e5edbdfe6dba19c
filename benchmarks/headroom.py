"""Headroom per question family, before any training: the embedded answerer with the frames each question's program
needs (gold) beside every training-free selector, on a world built for the purpose.

    nice uv run python benchmarks/headroom.py [--seed 0] [--videos 60] [--split val] [--families F.yaml ...]

gold: the centre frame of every segment the program needed, then more frames spread over them (8 in all;
tspo_ray.answerers.frame_sets); the training-free suite (tspo_ray.config.BASELINE_SELECTORS: uniform,
clip:top-k, clip:bin-max, clip:aks, clip:top-k+edges, clip:events, clip:anchors) selects eval.num_frames of the 128 candidates
from candidate features, cosines and timestamps only. A family shows what learning can add only where the best
of the suite stays well below gold (the headroom column). Design families on seed 0's train and val splits; the
held-out seeds of benchmarks/heldout.py are for the final table only.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tspo_ray.answerers import build_answerer, settings_for
from tspo_ray.answerers.frame_sets import request_for
from tspo_ray.config import BASELINE_SELECTORS, load_config
from tspo_ray.evaluation.accuracy import evaluate_selector, summarise
from tspo_ray.splits import prepare_split
from tspo_ray.synthetic.dataset import build_world
from tspo_ray.video.encoders import load_encoder

ROOT = Path(__file__).resolve().parents[1]


def gold_accuracy(items, answerer, k: int) -> dict[str, float]:
    """{family: accuracy, "overall": ...} with gold frames."""
    hits: dict[str, list[int]] = {}
    reqs = [request_for(it.record, it.video_path, "gold", k) for it in items]
    for i in range(0, len(reqs), 64):
        for it, a in zip(items[i: i + 64], answerer.answer(reqs[i: i + 64])):
            for fam in (it.record.family, "overall"):
                hits.setdefault(fam, []).append(a.option == it.record.answer)
    return {f: sum(v) / len(v) for f, v in hits.items()}


def headroom_table(gold: dict, suite: dict[str, dict]) -> tuple[str, dict]:
    fams = sorted(f for f in gold if f != "overall") + ["overall"]
    acc = {sel: {**{f: v["accuracy"] for f, v in r["per_family"].items()}, "overall": r["accuracy"]}
           for sel, r in suite.items()}
    names = list(suite)
    head = f"{'family':<18} {'n':>5} {'gold':>6} " + " ".join(f"{s:>17}" for s in names) + \
        f" {'best training-free':>19} {'gold - best':>11}"
    lines, out = [head, "-" * len(head)], {}
    for f in fams:
        row = {s: acc[s].get(f, float("nan")) for s in names}
        best = max(row, key=row.get)
        out[f] = {"gold": gold[f], **row, "best": best, "headroom": gold[f] - row[best]}
        n = suite[names[0]]["per_family"].get(f, {}).get("questions", suite[names[0]]["questions"])
        lines.append(f"{f:<18} {n:>5} {100 * gold[f]:>6.1f} "
                     + " ".join(f"{100 * row[s]:>17.1f}" for s in names)
                     + f" {best + ' ' + format(100 * row[best], '.1f'):>19} {100 * (gold[f] - row[best]):>11.1f}")
    return "\n".join(lines), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="world seed (design on 0; held-out seeds only at the end)")
    ap.add_argument("--videos", type=int, default=60, help="videos of the split")
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--families", nargs="+", help="family files (default: the shipped ones)")
    ap.add_argument("--root", help="build the world here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp) / f"world-{args.seed}"
        build_world(root, {args.split: args.videos}, seed=args.seed, families=args.families, progress=False)
        cfg = load_config(ROOT / "configs" / "embedded.yaml",
                          [f"data.root={root}", f"features.store={root / 'features'}"])
        items, _, _ = prepare_split(cfg, args.split, load_encoder(cfg.features.encoder), progress=False)
        answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))
        k = cfg.eval.num_frames
        gold = gold_accuracy(items, answerer, k)
        suite = {sel: summarise(evaluate_selector(items, sel, k, answerer, progress=False))
                 for sel in BASELINE_SELECTORS}
    table, out = headroom_table(gold, suite)
    print(f"world seed {args.seed}, {args.split} split: {len(items)} questions, {k} frames each\n")
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "split": args.split, "families": out}, indent=2))


if __name__ == "__main__":
    main()
