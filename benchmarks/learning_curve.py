"""Learning curves of the temporal agent on the embedded world, for one or more config variants side by side.

    uv run python benchmarks/learning_curve.py --steps 300 --every 50 \
        --variant "policy.tau_start=0.1 policy.tau_end=0.05" --variant "policy.tau_start=0.3 policy.tau_end=0.1"

Each variant trains a fresh agent with the single-process loop (tspo_ray.training.trainer.LocalTrainer, the loop the Ray job
distributes; same seed, same data order) and is evaluated on the validation split every --every steps with
deterministic top-T_s selection, next to the uniform and clip-top-k baselines. Prints one table per variant
(overall and per-family accuracy, mean R_T, the training-side zero-variance-group fraction, and per family the
trained groups whose G sets were all wrong, all right or mixed since the last point) and, with --json,
writes all figures. A variant is a space-separated list of config overrides on top of --config.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from tspo_ray.answerers import build_answerer, settings_for
from tspo_ray.config import load_config
from tspo_ray.evaluation.accuracy import evaluate_selector, summarise
from tspo_ray.splits import prepare_split
from tspo_ray.synthetic.dataset import ensure_world
from tspo_ray.training.trainer import LocalTrainer
from tspo_ray.video.encoders import load_encoder


def row(label: str, summary: dict, families: list[str], extra: str = "") -> str:
    fam = summary["per_family"]
    cells = "".join(f"{100 * fam[f]['accuracy']:>10.1f}" if f in fam else f"{'-':>10}" for f in families)
    return f"{label:<22}{100 * summary['accuracy']:>9.1f}{cells}{summary['mean_r_temporal'] or 0:>8.2f}{extra}"


def group_outcomes(outcomes: list[tuple[str, torch.Tensor]]) -> dict[str, dict[str, int]]:
    """Per family, how many trained groups had every set wrong, every set right (both teach nothing: zero variance),
    or both (the groups GRPO learns from)."""
    out: dict[str, dict[str, int]] = {}
    for family, r_answer in outcomes:
        counts = out.setdefault(family, {"all_wrong": 0, "all_right": 0, "mixed": 0})
        kind = "all_wrong" if float(r_answer.max()) == 0 else "all_right" if float(r_answer.min()) == 1 else "mixed"
        counts[kind] += 1
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"))
    ap.add_argument("--variant", action="append", default=None, help="config overrides (repeatable)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--split", default="val")
    ap.add_argument("--selectors", nargs="+", default=["agent"],
                    help="the agent's selectors evaluated at each point (e.g. agent:top-k agent:events)")
    ap.add_argument("--baselines", nargs="+", default=["uniform", "clip-top-k"], help="training-free selectors")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--png", help="draw the first variant's per-family curves (first --selectors) here")
    args = ap.parse_args()
    variants = args.variant or [""]
    base = load_config(args.config, [f"train.steps={args.steps}"])
    ensure_world(base)  # the embedded world, built on first use as the main job does
    encoder = load_encoder(base.features.encoder)
    train_items, _, _ = prepare_split(base, "train", encoder)
    eval_items, _, _ = prepare_split(base, args.split, encoder)
    answerer = build_answerer(base.answerer.kind, settings_for(base))
    from tspo_ray.training.scoring import reward_fn

    k = base.eval.num_frames
    baselines = {m: summarise(evaluate_selector(eval_items, m, k, answerer, progress=False))
                 for m in args.baselines}
    families = sorted(next(iter(baselines.values()))["per_family"])
    header = f"{'selector':<22}{'overall':>9}" + "".join(f"{f[:9]:>10}" for f in families) + f"{'R_T':>8}"
    report = {"split": args.split, "questions": len(eval_items), "baselines": baselines, "variants": {}}
    for variant in variants:
        cfg = load_config(args.config, [f"train.steps={args.steps}", *variant.split()])
        outcomes: list[tuple[str, torch.Tensor]] = []  # (family, R_A of the G sets) of every group trained on

        def rewards(item, draws, score=reward_fn(answerer)):
            result = score(item, draws)
            outcomes.append((str(item.record.family or ""), result.r_answer))
            return result

        trainer = LocalTrainer(train_items, rewards, cfg)
        lines, curve, zero_var, t0 = [], [], [], time.time()
        for step in range(0, args.steps + 1):  # step 0: the untrained agent
            if step:
                zero_var.append(trainer.train_step()["zero_variance_fraction"])
            if step % args.every == 0 or step == args.steps:
                trainer.agent.eval()
                with torch.no_grad():
                    got = {sel: summarise(evaluate_selector(eval_items, sel, k, answerer, trainer.agent,
                                                            progress=False)) for sel in args.selectors}
                trainer.agent.train()
                zv = sum(zero_var[-args.every:]) / max(len(zero_var[-args.every:]), 1)
                groups = group_outcomes(outcomes)
                outcomes.clear()
                curve.append({"step": step, "summary": got[args.selectors[0]], "selectors": got,
                              "zero_variance_fraction": zv, "train_groups": groups,
                              "train_seconds": round(time.time() - t0, 1)})
                for sel, s in got.items():
                    lines.append(row(f"{sel}, step {step}", s, families, f"   zero-var {zv:.2f}"))
                    print(lines[-1], flush=True)
                if groups:
                    lines.append(f"{'  train groups since':<22}  all wrong / all right / mixed: " + ", ".join(
                        f"{f} {g['all_wrong']}/{g['all_right']}/{g['mixed']}" for f, g in groups.items()))
                    print(lines[-1], flush=True)
        report["variants"][variant or "(config)"] = curve
        print(f"\n{args.split} split, {len(eval_items)} questions, T_s={k}; variant: {variant or '(config as is)'}")
        print(header)
        for m, s in baselines.items():
            print(row(m, s, families))
        print("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.png:
        from tspo_ray.evaluation.plots import learning_curves_png

        name, curve = next(iter(report["variants"].items()))
        learning_curves_png(args.png, [p["step"] for p in curve],
                            {f: [p["summary"]["per_family"][f]["accuracy"] for p in curve] for f in families},
                            {m: {f: v["accuracy"] for f, v in s["per_family"].items()} for m, s in baselines.items()},
                            f"{args.selectors[0]} on the {args.split} split ({len(eval_items)} questions); {name}")
        print(f"learning curves: {args.png}")


if __name__ == "__main__":
    main()
