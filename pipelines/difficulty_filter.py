"""TSPO-10K's difficulty filter: keep the questions a frozen answerer gets wrong from 4 uniform frames and right
from 64, and write them as TSPO-10K training jsonl.

    uv run python pipelines/difficulty_filter.py [--config F] [--split train] [--out FILE] [--video-root DIR]
        [--easy-frames 4] [--hard-frames 64] [--answerers N] [--batch-size 16] [--limit N] [key=value ...]

Reads the split's QA file under data.root (the embedded world is built there first when it is the default and
missing), answers every question twice with the configured answerer (answerer.kind / answerer.settings; the
embedded answerer by default) in train.num_answerers Ray actors of train.answerer_cpus CPUs, over the candidate
grid of features.fps / max_candidates / min_candidates, and writes atomically:
- --out (default <data.root>/tspo10k_<split>.jsonl): the kept questions, `video` relative to --video-root
  (default data.root), loadable with tspo_ray.data.benchmarks.load("tspo10k", OUT, video_root);
- OUT with .decisions.jsonl: every question's reason (kept, too_easy, too_hard, failed), answers and error.
Prints the counts per reason and the time taken. Deterministic: the same inputs give the same files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tspo_ray.answerers import check_config
from tspo_ray.config import ConfigError, load_config, parse_job_args
from tspo_ray.data.records import RecordError, format_bad_records


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--split", default="train", choices=["train", "val", "test"])
    ap.add_argument("--out", help="TSPO-10K jsonl of the kept questions (default <data.root>/tspo10k_<split>.jsonl)")
    ap.add_argument("--video-root", help="the folder TSPO-10K `video` paths are relative to (default data.root)")
    ap.add_argument("--easy-frames", type=int, default=4, help="answerable from this many uniform frames: too easy")
    ap.add_argument("--hard-frames", type=int, default=64, help="unanswerable from this many: too hard")
    ap.add_argument("--answerers", type=int, help="answerer actors (default train.num_answerers, at least 1)")
    ap.add_argument("--batch-size", type=int, default=16, help="questions per answer call")
    ap.add_argument("--specific-families", nargs="*", default=None,
                    help="question families written as type 'specific' (default haystack.families)")
    ap.add_argument("--limit", type=int, help="only the first N questions of the split")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides anywhere on the line, e.g. answerer.kind=vllm")
    return parse_job_args(ap, argv)


def ensure_world(root: Path) -> None:
    """Build the default embedded world when it is the data root and missing (as the main job does)."""
    if root.resolve() != Path("data/synthetic").resolve() or (root / "manifest.json").exists():
        return
    from tspo_ray.synthetic.dataset import DEFAULT_COUNTS, build_world

    print(f"{root} is missing: building the embedded world first")
    build_world(root, DEFAULT_COUNTS)


def quiet_ray_data() -> None:
    """One progress bar (the filter's own): Ray Data's periodic progress log lines off."""
    import logging

    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = check_config(load_config(args.config, args.overrides))
        from tspo_ray.distributed.difficulty_filter import FilterSettings

        settings = FilterSettings(args.easy_frames, args.hard_frames, cfg.features.fps, cfg.features.max_candidates,
                                  cfg.features.min_candidates, args.batch_size)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = Path(cfg.data.root)
    ensure_world(root)
    from tspo_ray.data.records import resolve_video
    from tspo_ray.splits import split_records

    cfg.data.on_bad_record = "skip"  # bad lines are listed and left out; the rest is filtered
    try:
        records, problems = split_records(cfg, args.split)
    except (ConfigError, RecordError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(format_bad_records(problems, root / getattr(cfg.data, args.split)))
    records = records[: args.limit] if args.limit else records
    out = Path(args.out or root / f"tspo10k_{args.split}.jsonl")
    families = cfg.haystack.families if args.specific_families is None else args.specific_families
    from tspo_ray.answerers import AnswererFactory, settings_for
    from tspo_ray.answerers.pool import AnswererActorPool, actor_options
    from tspo_ray.distributed import init_ray
    from tspo_ray.distributed.difficulty_filter import filter_records, write_result

    init_ray(ignore_reinit_error=True, log_to_driver=False)
    quiet_ray_data()
    options = actor_options(cfg.answerer.kind, cfg.answerer.settings) | {"num_cpus": cfg.train.answerer_cpus}
    pool = AnswererActorPool(AnswererFactory(cfg.answerer.kind, settings_for(cfg)),
                             args.answerers or max(1, cfg.train.num_answerers), options)
    print(f"answerer: {pool.ready()[0]} x {len(pool.actors)}; {len(records)} questions of {args.split}")
    result = filter_records(records, [str(resolve_video(r, root)) for r in records], pool,
                            args.video_root or root, settings, families, progress=not args.no_progress)
    pool.shutdown()
    write_result(result, out, out.with_suffix(".decisions.jsonl"))
    c = result.counts
    print(f"{c['total']} questions: kept {c['kept']}, too_easy {c['too_easy']}, too_hard {c['too_hard']}, "
          f"failed {c['failed']} in {result.seconds:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
