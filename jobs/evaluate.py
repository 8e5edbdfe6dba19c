"""Evaluate keyframe selectors on a dataset split with an answerer.

    uv run python jobs/evaluate.py --split test --selectors uniform clip:top-k clip:aks agent:bin-max [--checkpoint outputs/run/checkpoints]
    uv run python jobs/evaluate.py --split test data.max_eval_questions=6 answerer.kind=vllm \
        'answerer.settings={model: /path/to/qwen2_5_vl, num_frames: 8, probe_frame_hw: [128, 128]}'

Prints and writes the table (overall and per-family accuracy, mean R_T, parse failures, selection time), a JSON
result file, and the selected frames and the answer per question and selector (`selections.jsonl`: id, method,
frame_indices, timestamps_s, scores, output (the answerer's raw text), predicted (the parsed option or null), error
(why a request could not be answered, or null), answer (the correct option), correct) for reuse by other evaluators;
`--plots N` draws N score-curve pictures for the agent. `data.max_eval_questions=N` evaluates the first N questions.

A benchmark in its own format, exported for lmms-eval (the annotation file written back with `frame_idx` per question,
under OUT/frame_idx/<selector>/; resumable: finished questions are kept in OUT/partial.jsonl):

    uv run python jobs/evaluate.py --benchmark longvideobench --annotations lvb_val.json --videos /data/lvb/videos \
        --selectors agent --checkpoint /models/TSPO-0.4B --out outputs/lvb eval.num_frames=64 [--answer]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tspo_ray.answerers import build_answerer  # noqa: E402
from tspo_ray.config import ConfigError, load_config  # noqa: E402
from tspo_ray.data.records import RecordError, format_skipped, write_jsonl_atomic, write_text_atomic  # noqa: E402
from tspo_ray.encoders import load_encoder  # noqa: E402
from tspo_ray.evaluation import (AllRequestsRejected, check_answered, evaluate_selector, format_table,  # noqa: E402
                                 summarise)
from tspo_ray.features import NoUsableQuestions, prepare_split  # noqa: E402
from tspo_ray.policy import SELECTORS, parse_selector  # noqa: E402
from tspo_ray.safe_files import UnsafeFileError  # noqa: E402


def run_evaluation(cfg, split: str, selectors: list[str], out_dir: Path, checkpoint: str | None = None,
                   num_plots: int = 0, items=None, answerer=None, agent=None, progress: bool = True) -> dict:
    """Evaluate selectors; writes results.json, table.md, selections.jsonl (and plots) under out_dir."""
    inference_mode = cfg.agent.inference_mode
    if any(parse_selector(s)[0] == "agent" for s in selectors) and agent is None:
        if not checkpoint:
            raise ConfigError("selectors: the agent scorer needs --checkpoint (a run folder, checkpoint file or "
                              "TSPO-0.4B folder)")
        from tspo_ray.selector import load_selector_agent

        agent, inference_mode = load_selector_agent(checkpoint, window=cfg.agent.window, heads=cfg.agent.heads)
    problems = []
    if items is None:
        encoder = load_encoder(cfg.features.encoder)
        items, problems, _ = prepare_split(cfg, split, encoder, max_questions=cfg.data.max_eval_questions,
                                           progress=progress)
        if not items:
            raise NoUsableQuestions(f"no usable questions in the {split} split"
                                    + (format_skipped(problems) if problems else " (the split is empty)"))
    answerer = answerer or build_answerer(cfg.answerer.kind, cfg.answerer.settings)
    k = cfg.eval.num_frames
    results, selections = {}, []
    for method in selectors:
        rows = evaluate_selector(items, method, k, answerer, agent, progress=progress, inference_mode=inference_mode)
        check_answered(method, rows)
        results[method] = summarise(rows)
        selections.extend({key: r[key] for key in ("id", "method", "frame_indices", "timestamps_s", "scores",
                                                  "output", "predicted", "error", "answer", "correct")}
                          for r in rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"split": split, "num_frames": k, "answerer": answerer.name, "results": results,
               "skipped": problems, "checkpoint": checkpoint}
    if isinstance(getattr(answerer, "stats", None), dict):  # vLLM / HF: generate calls, requests, failed
        payload["answerer_stats"] = dict(answerer.stats)
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2))
    table = format_table(results) + format_skipped(problems)
    write_text_atomic(out_dir / "table.md", table + "\n")
    write_jsonl_atomic(out_dir / "selections.jsonl", selections)
    if agent is not None and num_plots:
        from tspo_ray.plots import plot_item

        step = max(1, len(items) // num_plots)
        for item in items[::step][:num_plots]:
            plot_item(out_dir / "plots" / f"{item.key}.png", item, agent, k)
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (default: the embedded world)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--selectors", nargs="+", default=["uniform", "clip-top-k", "bin-max"], choices=SELECTORS,
                    metavar="SELECTOR", help=f"SCORER:METHOD or an alias: {', '.join(SELECTORS)}")
    ap.add_argument("--checkpoint", help="agent checkpoint (run folder, checkpoint file or TSPO-0.4B weights)")
    ap.add_argument("--out", default="outputs/eval")
    ap.add_argument("--plots", type=int, default=0, help="score-curve pictures to draw (needs the agent)")
    ap.add_argument("--benchmark", help="a benchmark in its own format (longvideobench, mlvu, videomme, lvbench)")
    ap.add_argument("--annotations", help="--benchmark: its annotation file (e.g. lvb_val.json)")
    ap.add_argument("--videos", help="--benchmark: the folder its video paths are relative to")
    ap.add_argument("--answer", action="store_true", help="--benchmark: also answer with the config's answerer")
    ap.add_argument("--retry-failed", action="store_true",
                    help="decode videos that failed before again (by default their recorded reason stands)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.num_frames=8")
    args = ap.parse_args()
    if args.retry_failed:
        args.overrides.append("features.retry_failed=true")
    if args.benchmark:
        return benchmark_main(args)
    try:
        cfg = load_config(args.config, args.overrides)
        payload = run_evaluation(cfg, args.split, args.selectors, Path(args.out), args.checkpoint, args.plots)
    except (ConfigError, FileNotFoundError, RecordError, NoUsableQuestions, UnsafeFileError,
            AllRequestsRejected) as exc:
        sys.exit(f"error: {exc}")
    print(format_table(payload["results"]) + format_skipped(payload["skipped"]))
    print(f"wrote {args.out}/results.json, table.md, selections.jsonl")


def benchmark_main(args) -> None:
    from tspo_ray.benchmark_eval import BenchmarkRunError, run_benchmark_job
    from tspo_ray.data.frame_idx_export import ExportError

    if not args.annotations:
        sys.exit("error: --benchmark needs --annotations (the benchmark's annotation file)")
    try:
        cfg = load_config(args.config, args.overrides)
        summary = run_benchmark_job(cfg, args.benchmark, args.annotations, args.videos, args.selectors, args.out,
                                    checkpoint=args.checkpoint, answer=args.answer)
    except (ConfigError, FileNotFoundError, AllRequestsRejected, BenchmarkRunError, ExportError) as exc:
        sys.exit(f"error: {exc}")
    for selector, entry in summary["selectors"].items():
        acc = f", accuracy {100 * entry['accuracy']:.1f}%" if "accuracy" in entry else ""
        print(f"{selector}: {entry['exported']}/{entry['questions']} questions with frame_idx, "
              f"{len(entry['failed'])} failed{acc} -> {entry['frame_idx_file']}")
    print(f"wrote {args.out}/summary.json")


if __name__ == "__main__":
    main()
