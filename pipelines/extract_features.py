"""Ray Data feature extraction: decode each distinct video of a split once and CLIP-encode it into the store.

    uv run python pipelines/extract_features.py --split train [--workers 2] [--decode-workers 1] [--chunk 256]
        [key=value config overrides]

Decode actors (CPU) turn each video into rows of at most --chunk uint8 frames; encoder actors (the encoder loaded
once each, on features.encoder.device) turn rows into embeddings; this process assembles and writes each video's
entry. A second run reuses every stored entry. Videos that cannot be used are listed in <store>/errors.jsonl with the
reason; the pipeline goes on with the rest.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tspo_ray.config import ConfigError, load_config, parse_job_args
from tspo_ray.data.records import resolve_video
from tspo_ray.distributed.feature_pipeline import extract_kwargs, extract_with_ray
from tspo_ray.splits import split_records
from tspo_ray.video.encoders import load_encoder
from tspo_ray.video.features import FeatureStore


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--split", default="train", choices=["train", "val", "test"])
    ap.add_argument("--workers", type=int, help="encoder actors (default: features.workers)")
    ap.add_argument("--decode-workers", type=int, default=1, help="most decode actors (default: 1)")
    ap.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decode actor (default: 1)")
    ap.add_argument("--chunk", type=int, default=256,
                    help="most frames per row between decoding and encoding (memory per row; default: 256)")
    ap.add_argument("--gpus-per-worker", type=float, help="GPUs per encoder actor (default: from the config)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="decode videos that failed before again (by default their recorded reason stands)")
    ap.add_argument("overrides", nargs="*", help="config overrides anywhere on the line, e.g. features.fps=2")
    args = parse_job_args(ap, argv)
    if args.retry_failed:
        args.overrides.append("features.retry_failed=true")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    for flag, value in (("--decode-workers", args.decode_workers), ("--chunk", args.chunk)):
        if value < 1:
            sys.exit(f"error: {flag} must be >= 1, got {value}")
    if args.decode_cpus <= 0:
        sys.exit(f"error: --decode-cpus must be > 0, got {args.decode_cpus}")
    try:
        cfg = load_config(args.config, args.overrides)
        cfg.data.on_bad_record = "skip"  # extraction lists bad lines and encodes the rest
        records, problems = split_records(cfg, args.split)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    from tspo_ray.distributed import init_ray

    init_ray(ignore_reinit_error=True)
    root = Path(cfg.data.root)
    for p in problems:
        print(f"skipped record: {p['reason']}")
    videos = [resolve_video(r, root) for r in records]
    encoder_name = load_encoder(cfg.features.encoder).name
    spec = cfg.features.store_spec(encoder_name)
    store = FeatureStore(cfg.features.store)
    actor_kwargs = extract_kwargs(cfg)
    if args.workers is not None:
        actor_kwargs["num_workers"] = args.workers
    if args.gpus_per_worker is not None:
        actor_kwargs["gpus_per_worker"] = args.gpus_per_worker
    counts = extract_with_ray(videos, cfg.features.encoder.to_dict(), spec, store,
                              retry_failed=cfg.features.retry_failed, decode_workers=args.decode_workers,
                              decode_cpus=args.decode_cpus, chunk=args.chunk, **actor_kwargs)
    print(f"{counts} -> {store.root}")
    if counts["failed"]:
        print(f"{counts['failed']} videos failed: see {store.errors_path}")
    if counts.get("known_bad"):
        print(f"{counts['known_bad']} videos failed in an earlier run and were not decoded again "
              f"(see {store.errors_path}; --retry-failed tries them)")


if __name__ == "__main__":
    main()
