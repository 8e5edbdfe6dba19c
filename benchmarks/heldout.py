"""Held-out learning result: agents trained with several seeds, evaluated on fresh worlds of unseen seeds.

    uv run python benchmarks/heldout.py [--seeds 0 1 2] [--worlds 101 202 303] [--test-videos 45] \
        [--out outputs/heldout] [--json F] [key=value ...]      (default worlds 4242 5353 6464)

- Training: the embedded world's training split (data/synthetic, world seed 0), once per `--seeds` training seed,
  with the single-process loop (the Ray job trains the same weights for the same config). The checkpoint and the
  agent's default inference mode are chosen on that world's validation split (train.eval_every, and every selection
  method tried on validation), never on a test split.
- Evaluation: for every `--worlds` seed, a fresh world of `--test-videos` test videos is built with that seed
  (never one of DEVELOPMENT_WORLDS), and every selector of the suite answers its test questions.
- Report: per selector, the accuracy over all fresh-world questions as mean ± standard deviation over training
  seeds, with a 95% hierarchical bootstrap CI (training seeds, then questions); per family the same mean ± sd.
  Training-free selectors have one "seed". "new families" pools the questions of NEW_FAMILIES. The last lines
  check the agent's default mode against the best training-free selector, overall, on the new families and on
  each family.

Everything lands under --out (worlds, runs, per-run results), and a killed run picks up where it stopped: a trained
seed is not retrained and an evaluated (seed, world) pair is not evaluated again.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from tspo_ray.config import BASELINE_SELECTORS, FULL_SUITE, load_config, parse_job_args

#: the families whose needed frames follow from temporal structure, not from the wording (docs/families.md)
NEW_FAMILIES = ("relation_two", "second_event", "third_event", "second_last_event")
#: world seeds used while developing the world and its families: never a held-out world
DEVELOPMENT_WORLDS = {0, 7, 101, 202, 303}


def train_seed(cfg, seed: int, out: Path, train_items, val_items, answerer):
    """The trained agent of one training seed and its default inference mode (both chosen on validation)."""
    from tspo_ray.checkpoint import latest_checkpoint, load_agent, load_checkpoint, recommended_checkpoint
    from tspo_ray.training.model_selection import choose_inference_mode
    from tspo_ray.training.trainer import train_single_process

    cfg.train.seed, cfg.train.output_dir = seed, str(out)
    ckpts = out / "checkpoints"
    done = latest_checkpoint(ckpts) is not None and load_checkpoint(ckpts)["step"] >= cfg.train.steps
    if not done:
        print(f"training seed {seed} ({cfg.train.steps} steps)", flush=True)
        train_single_process(cfg, train_items, resume=True, val_items=val_items, answerer=answerer)
    chosen = recommended_checkpoint(ckpts)
    agent = load_agent(chosen).eval()
    state = load_checkpoint(chosen)
    mode = state.get("inference_mode")
    if mode is None:
        mode, _ = choose_inference_mode(cfg, chosen, out / "eval_val", agent, answerer, progress=False)
    return agent, mode, chosen.name


def evaluate_world(items, selectors, k, answerer, agent, mode, cache: Path) -> dict[str, list[dict]]:
    """Per selector, one row per question (family, correct); cached in `cache` so a restart skips it, and a
    selector added to the suite since is the only one evaluated."""
    from tspo_ray.evaluation.accuracy import evaluate_selector
    from tspo_ray.safe_files import write_text_atomic

    rows = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [sel for sel in selectors if sel not in rows]
    for sel in missing:
        got = evaluate_selector(items, sel, k, answerer, agent, progress=False, inference_mode=mode)
        rows[sel] = [{"id": r["id"], "family": r["family"], "correct": float(r["correct"])} for r in got]
    if missing:
        write_text_atomic(cache, json.dumps(rows))
    return rows


def summarise_selector(per_seed_rows: list[list[dict]], families: list[str]) -> dict:
    from tspo_ray.evaluation.stats import hierarchical_bootstrap_ci, mean_and_spread

    def by(rows_filter):
        correct = [[r["correct"] for r in rows if rows_filter(r)] for rows in per_seed_rows]
        accs = [sum(c) / len(c) for c in correct]
        mean, sd = mean_and_spread(accs)
        return {"mean": mean, "sd": sd, "per_seed": accs, "ci": hierarchical_bootstrap_ci(correct),
                "questions": len(correct[0])}

    new = [f for f in NEW_FAMILIES if f in families]
    return {"overall": by(lambda r: True), "new families": by(lambda r: r["family"] in new),
            **{f: by(lambda r, f=f: r["family"] == f) for f in families}}


def format_report(summary: dict, seeds: list[int], worlds: list[int], modes: dict) -> str:
    pct = lambda x: 100 * x  # noqa: E731
    FAMILIES = [f for f in next(iter(summary.values())) if f != "overall"]  # "new families" first, then each one
    lines = [f"fresh worlds {worlds} (test splits, {summary['uniform']['overall']['questions']} questions), "
             f"training seeds {seeds}; agent default modes chosen on validation: {modes}",
             "", "| selector | overall (mean ± sd) | 95% CI | " + " | ".join(FAMILIES) + " |",
             "|---|---:|---:|" + "---:|" * len(FAMILIES)]
    for sel, s in summary.items():
        o = s["overall"]
        fam = " | ".join(f"{pct(s[f]['mean']):.1f} ± {pct(s[f]['sd']):.1f}" for f in FAMILIES)
        ci = f"{pct(o['ci'][0]):.1f}–{pct(o['ci'][1]):.1f}"
        lines.append(f"| {sel} | {pct(o['mean']):.1f} ± {pct(o['sd']):.1f} | {ci} | {fam} |")
    best = max(BASELINE_SELECTORS, key=lambda b: summary[b]["overall"]["mean"])
    agent, base = summary["agent"], summary[best]
    from tspo_ray.evaluation.stats import intervals_overlap

    lines += ["", f"agent (default mode) vs the best training-free selector ({best}): "
              f"{pct(agent['overall']['mean'] - base['overall']['mean']):+.1f} points overall; CIs "
              f"{'overlap' if intervals_overlap(agent['overall']['ci'], base['overall']['ci']) else 'do not overlap'}"]
    for f in FAMILIES:
        best_f = max(BASELINE_SELECTORS, key=lambda b: summary[b][f]["mean"])
        gap = agent[f]["mean"] - summary[best_f][f]["mean"]
        lines.append(f"  {f}: agent {pct(agent[f]['mean']):.1f} vs best baseline {best_f} "
                     f"{pct(summary[best_f][f]['mean']):.1f} ({pct(gap):+.1f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"),
                    help="the job config trained (e.g. configs/embedded_eq3.yaml for the reference agent alone)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--worlds", type=int, nargs="+", default=[4242, 5353, 6464], help="fresh world seeds")
    ap.add_argument("--test-videos", type=int, default=45)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "heldout"))
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--tag", default="", help="names this configuration's runs and evaluations in --out (e.g. scan), "
                    "so several configurations share one set of fresh worlds and baseline evaluations")
    ap.add_argument("--agent-selectors", nargs="+", default=None,
                    help="the agent's selectors evaluated (default: every agent mode of the suite, and agent:greedy for "
                         "a set-aware kind such as agent.kind=scan); `agent` (the mode chosen on validation) is always in")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=300 policy.group_size=16")
    args = parse_job_args(ap)
    if set(args.worlds) & DEVELOPMENT_WORLDS:
        ap.error(f"world seeds {sorted(DEVELOPMENT_WORLDS)} were used in development; pick fresh ones")
    from tspo_ray.answerers import build_answerer, settings_for
    from tspo_ray.splits import prepare_split
    from tspo_ray.synthetic.dataset import build_world, ensure_world
    from tspo_ray.video.encoders import load_encoder

    out = Path(args.out)
    cfg = load_config(args.config, args.overrides)
    ensure_world(cfg)
    encoder = load_encoder(cfg.features.encoder)
    answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))
    train_items, _, _ = prepare_split(cfg, "train", encoder)
    val_items, _, _ = prepare_split(cfg, "val", encoder)
    from tspo_ray.synthetic.world import WorldSettings

    manifest = Path(cfg.data.root) / "manifest.json"  # fresh worlds: the training world's settings, new seeds
    settings = WorldSettings.load(json.loads(manifest.read_text())["settings"]) if manifest.exists() else None
    world_items = {}
    for w in args.worlds:
        root = out / f"world-{w}"
        if not (root / "test.jsonl").exists():
            print(f"building fresh world {w} ({args.test_videos} test videos)", flush=True)
            build_world(root, {"test": args.test_videos}, seed=w, settings=settings)
        wcfg = load_config(args.config, [*args.overrides, f"data.root={root}"])
        world_items[w], _, _ = prepare_split(wcfg, "test", encoder)
    k = cfg.eval.num_frames
    set_aware = cfg.agent.kind != "eq3"
    agent_selectors = args.agent_selectors or [s for s in FULL_SUITE if s.startswith("agent")] + (
        ["agent:greedy"] if set_aware else [])
    agent_selectors = list(dict.fromkeys([*agent_selectors, "agent"]))
    suite = [*BASELINE_SELECTORS, *agent_selectors]
    rows = {s: [[] for _ in args.seeds] for s in suite}
    modes, trained = {}, []
    for seed in args.seeds:  # training first: a configuration started beside another finds its baselines cached
        agent, mode, name = train_seed(load_config(args.config, args.overrides), seed,
                                       out / f"run-{args.tag}seed{seed}", train_items, val_items, answerer)
        modes[seed] = f"{mode} ({name})"
        trained.append((agent, mode))
    for w, items in world_items.items():  # training-free selectors: one evaluation per world
        got = evaluate_world(items, BASELINE_SELECTORS, k, answerer, None, "top-k", out / f"eval-baselines-w{w}.json")
        for s in BASELINE_SELECTORS:
            rows[s][0].extend(got[s])
    for i, (seed, (agent, mode)) in enumerate(zip(args.seeds, trained)):
        for w, items in world_items.items():
            got = evaluate_world(items, agent_selectors, k, answerer, agent, mode, out / f"eval-{args.tag}seed{seed}-w{w}.json")
            for s in agent_selectors:
                rows[s][i].extend(got[s])
    families = sorted({r["family"] for per_seed in rows["uniform"] for r in per_seed})
    summary = {s: summarise_selector([r for r in rows[s] if r], families) for s in suite}
    print("\n" + format_report(summary, args.seeds, args.worlds, modes))
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": args.seeds, "worlds": args.worlds, "modes": modes,
                                               "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
