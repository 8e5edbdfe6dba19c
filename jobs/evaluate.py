"""Evaluate keyframe selectors on a dataset split with an answerer.

    uv run python jobs/evaluate.py --split test --selectors uniform clip:top-k clip:aks agent:bin-max [--checkpoint outputs/run/checkpoints]
    uv run python jobs/evaluate.py --split test data.max_eval_questions=6 answerer.kind=vllm \
        'answerer.settings={model: /path/to/qwen2_5_vl, num_frames: 8, probe_frame_hw: [128, 128]}'

Prints and writes the table (overall and per-family accuracy, mean R_T, parse failures, selection time), a JSON
result file, and the selected frames and the answer per question and selector (`selections.jsonl`: id, method,
frame_indices, timestamps_s, scores, output (the answerer's raw text), predicted (the parsed option or null), error
(why a request could not be answered, or null), answer (the correct option), correct) for reuse by other evaluators;
`--plots N` draws N score-curve pictures for the agent. `data.max_eval_questions=N` evaluates the first N questions.
With --checkpoint, both forms select with the feature spec the checkpoint records (rate, cap, frame size, encoder);
a features.* setting that asks for other features is refused.

A benchmark in its own format (longvideobench, mlvu, videomme, lvbench): Ray Data encodes the candidates of the
selector's feature spec into the feature store (TSPO-0.4B: every candidate of the 1-fps grid at native size), each
selector picks eval.num_frames, and the annotation file is written back with
`frame_idx` per question under OUT/frame_idx/<selector>/ (what lmms-eval adaptations read through LMMSJSON). With
--answer, the config's answerer answers and OUT/table.md holds the benchmark's own breakdown (LongVideoBench by
duration group, MLVU M-Avg over tasks, Video-MME short/medium/long, LVBench by question type). Resumable: finished
questions are kept in OUT/partial.jsonl, so a killed run redone with the same command does only the rest.

    uv run python jobs/evaluate.py --benchmark longvideobench --annotations lvb_val.json --videos /data/lvb/videos \
        --config configs/bench_longvideobench.yaml --out outputs/lvb [--answer] [--local]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tspo_ray.answerers import check_config
from tspo_ray.config import ConfigError, load_config, parse_job_args
from tspo_ray.data.records import RecordError, format_skipped
from tspo_ray.evaluation.accuracy import AllRequestsRejected, format_table
from tspo_ray.evaluation.split_job import run_evaluation
from tspo_ray.method.selection_methods import SELECTORS
from tspo_ray.safe_files import UnsafeFileError
from tspo_ray.splits import NoUsableQuestions

#: the split evaluation's selectors when --selectors is not given (--benchmark: the config's eval.selectors)
DEFAULT_SELECTORS = ["uniform", "clip-top-k", "bin-max"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (default: the embedded world)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--selectors", nargs="+", choices=SELECTORS, metavar="SELECTOR",
                    help=f"SCORER:METHOD or an alias: {', '.join(SELECTORS)} (default: {' '.join(DEFAULT_SELECTORS)}; "
                         "--benchmark: the config's eval.selectors)")
    ap.add_argument("--checkpoint", help="agent checkpoint (run folder, checkpoint file or TSPO-0.4B weights)")
    ap.add_argument("--out", default="outputs/eval")
    ap.add_argument("--plots", type=int, default=0, help="score-curve pictures to draw (needs the agent)")
    ap.add_argument("--benchmark", help="a benchmark in its own format: longvideobench, mlvu, videomme, lvbench "
                    "(frame_idx export and accuracy), tsv or tspo10k (accuracy only, with --answer)")
    ap.add_argument("--annotations", help="--benchmark: its annotation file (e.g. lvb_val.json)")
    ap.add_argument("--videos", help="--benchmark: the folder its video paths are relative to")
    ap.add_argument("--answer", action="store_true", help="--benchmark: also answer with the config's answerer")
    ap.add_argument("--local", action="store_true",
                    help="--benchmark: extract features in this process instead of Ray Data (small runs, tests)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="decode videos that failed before again (by default their recorded reason stands)")
    ap.add_argument("overrides", nargs="*", help="config overrides anywhere on the line, e.g. eval.num_frames=8")
    args = parse_job_args(ap, argv)
    if args.retry_failed:
        args.overrides.append("features.retry_failed=true")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.benchmark:
        return benchmark_main(args)
    try:
        cfg = check_config(load_config(args.config, args.overrides))
        payload = run_evaluation(cfg, args.split, args.selectors or DEFAULT_SELECTORS, Path(args.out), args.checkpoint,
                                 args.plots)
    except (ConfigError, FileNotFoundError, RecordError, NoUsableQuestions, UnsafeFileError,
            AllRequestsRejected) as exc:
        sys.exit(f"error: {exc}")
    print(format_table(payload["results"]) + format_skipped(payload["skipped"]))
    print(f"wrote {args.out}/results.json, table.md, selections.jsonl")


def benchmark_main(args) -> None:
    from tspo_ray.data.frame_idx_export import ExportError
    from tspo_ray.distributed.feature_pipeline import ray_extractor
    from tspo_ray.evaluation.benchmark import BenchmarkRunError
    from tspo_ray.evaluation.benchmark_job import run_benchmark_job

    if not args.annotations:
        sys.exit("error: --benchmark needs --annotations (the benchmark's annotation file)")
    try:
        cfg = check_config(load_config(args.config, args.overrides))
        summary = run_benchmark_job(cfg, args.benchmark, args.annotations, args.videos,
                                    args.selectors or cfg.eval.selectors, args.out, checkpoint=args.checkpoint,
                                    answer=args.answer, extract=None if args.local else ray_extractor(cfg))
    except (ConfigError, FileNotFoundError, AllRequestsRejected, BenchmarkRunError, ExportError, RecordError,
            UnsafeFileError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    for selector, entry in summary["selectors"].items():
        where = f" -> {entry['frame_idx_file']}" if entry["frame_idx_file"] else " (no frame_idx export)"
        print(f"{selector}: {entry['exported']}/{entry['questions']} questions with frame_idx, "
              f"{len(entry['failed'])} failed{where}")
    if "table" in summary:
        print(summary["table"])
    print(f"wrote {args.out}/summary.json" + (", table.md" if "table" in summary else ""))


if __name__ == "__main__":
    main()
