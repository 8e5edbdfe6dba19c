"""Accuracy of the embedded answerer per question family under fixed frame sets: gold, uniform, random.

    nice uv run python benchmarks/answerer_accuracy.py [--root data/synthetic] [--split val] [--frames 8]

gold: up to 8 frames from inside the target spans (relation: both spans; counting: every occurrence);
uniform: 8 of the 128 1-fps candidates at bin centres; random: 8 candidates, seeded by the record id.
The gold condition bounds what a selector can reach with this answerer; uniform and random are what it must beat.
Prints a table (and writes it as JSON with --json).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from tspo_ray.answerers.embedded import EmbeddedAnswerer
from tspo_ray.answerers.frame_sets import METHODS, request_for
from tspo_ray.data.records import read_records


def measure(answerer, records, root: Path, methods, k: int, batch: int = 32) -> dict:
    """{method: {family: [correct, total]}} plus the share of answers given with evidence."""
    table: dict = {m: defaultdict(lambda: [0, 0]) for m in methods}
    evidence: dict = {m: [0, 0] for m in methods}
    for m in methods:
        for i in tqdm(range(0, len(records), batch), desc=m):
            chunk = records[i : i + batch]
            answers = answerer.answer([request_for(r, root / r.video, m, k) for r in chunk])
            for r, a in zip(chunk, answers):
                for fam in (r.family, "overall"):
                    table[m][fam][0] += a.option == r.answer
                    table[m][fam][1] += 1
                evidence[m][0] += bool(a.extra.get("evidence"))
                evidence[m][1] += 1
    return {"accuracy": {m: {f: c / n for f, (c, n) in t.items()} for m, t in table.items()},
            "counts": {f: n for f, (_, n) in table[methods[0]].items()},
            "evidence": {m: c / n for m, (c, n) in evidence.items()}}


def format_table(result: dict, methods) -> str:
    fams = sorted(f for f in result["counts"] if f != "overall") + ["overall"]
    lines = [f"{'family':<18}{'n':>6}" + "".join(f"{m:>10}" for m in methods)]
    for f in fams:
        lines.append(f"{f:<18}{result['counts'][f]:>6}" + "".join(f"{result['accuracy'][m][f]:>10.3f}" for m in methods))
    lines.append(f"{'with evidence':<24}" + "".join(f"{result['evidence'][m]:>10.3f}" for m in methods))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="data/synthetic")
    ap.add_argument("--split", default="val")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--limit", type=int, help="first N records only")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    root = Path(args.root)
    records, errors = read_records(root / f"{args.split}.jsonl", strict=False)
    if errors:
        print(f"skipped {len(errors)} bad records, e.g. {errors[0]}")
    records = records[: args.limit] if args.limit else records
    answerer = EmbeddedAnswerer()
    t0 = time.time()
    result = measure(answerer, records, root, args.methods, args.frames)
    result.update(split=args.split, frames=args.frames, answerer=answerer.name, seconds=round(time.time() - t0, 1))
    print(f"{answerer.name} on {args.split} ({len(records)} questions, {args.frames} frames each)")
    print(format_table(result, args.methods))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
