"""A split's questions joined to their videos' candidate features: the FeatureItems that training and evaluation
work on. Records come from tspo_ray.data, features from the store in tspo_ray.video.features; videos still missing
from the store are extracted first, in this process or by whatever extractor the caller passes (the Ray Data
pipeline of tspo_ray.distributed.feature_pipeline)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from tspo_ray.config import ConfigError
from tspo_ray.data.benchmarks import load
from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import (
    QARecord,
    RecordError,
    check_video_path,
    format_bad_records,
    read_records,
    resolve_video,
)
from tspo_ray.safe_files import UnsafeFileError
from tspo_ray.video.features import FeatureStore, StoreSpec, VideoFeatures, extract_local

log = logging.getLogger(__name__)

#: extract(videos, spec, store) -> counts: fills the store with the features of the videos not in it yet
Extractor = Callable[[Sequence[str], StoreSpec, FeatureStore], dict]


def _video_problem(store: FeatureStore, key: str, path: str, failed: dict[str, str]) -> "VideoFeatures | str":
    """A video's features, or a string saying why there are none (the decoder's own reason where it failed)."""
    try:
        if store.has(key):
            return store.get(key)
    except UnsafeFileError as exc:
        return str(exc)
    reason = failed.get(key)
    if reason is None:
        return "no features (see the feature store's errors table)"
    return reason[len(path) + 2:] if reason.startswith(f"{path}: ") else reason  # the caller names the video


def load_items(records: Sequence[QARecord], data_root: str | Path, store: FeatureStore, spec: StoreSpec, encoder,
               min_candidates: int = 1, num_frames: int | None = None):
    """FeatureItems for the records whose video features are in the store; the rest are returned as skipped.

    A video with fewer than min_candidates candidate frames is skipped (a one-frame "video" cannot be selected
    from); one with fewer than num_frames (T_s) is kept, with a warning: every selector then returns all of it."""
    text = store.text_features(encoder, (r.question for r in records))
    items, skipped, by_video, short = [], [], {}, {}
    failed = store.failed_keys()
    for rec in records:
        path = resolve_video(rec, data_root)
        try:
            key = spec.video_key(path)
        except OSError as exc:
            skipped.append({"id": rec.id, "video": path, "reason": f"{rec.video}: {exc.strerror or exc}"})
            continue
        if key not in by_video:
            by_video[key] = _video_problem(store, key, path, failed)
        feats = by_video[key]
        if not isinstance(feats, str) and len(feats.frame_indices) < min_candidates:
            feats = (f"only {len(feats.frame_indices)} candidate frame(s), fewer than the minimum of {min_candidates} "
                     f"(data.min_video_candidates)")
        if isinstance(feats, str):
            skipped.append({"id": rec.id, "video": path, "reason": f"{rec.video}: {feats}"})
            continue
        if num_frames and len(feats.frame_indices) < num_frames:
            short[rec.video] = len(feats.frame_indices)
        items.append(FeatureItem(rec, feats.frame_features.float(), text[rec.question], feats.frame_indices,
                                 feats.timestamps_s, path))
    if short:
        listed = ", ".join(f"{v} ({n})" for v, n in list(short.items())[:5])
        log.warning("%d video(s) have fewer candidate frames than T_s=%d, so every selector returns all of them: %s%s",
                    len(short), num_frames, listed, ", ..." if len(short) > 5 else "")
    return items, skipped


class NoUsableQuestions(ValueError):
    """A split left no question to work on; the message lists why each was skipped."""


def split_records(cfg, split: str) -> tuple[list[QARecord], list[dict]]:
    """The records of a split and the malformed lines skipped (data.on_bad_record: skip), or RecordError listing
    every bad line (stop, the default). A split file outside data.root is refused unless data.allow_outside_root:
    its videos would be looked up under the root and silently missed."""
    root = Path(cfg.data.root)
    jsonl = root / getattr(cfg.data, split)
    real_root, real_jsonl = root.resolve(), jsonl.resolve()
    if not cfg.data.allow_outside_root and real_root not in real_jsonl.parents:
        raise ConfigError(f"data.{split}: {jsonl} is outside data.root {root}, whose folder its video paths are read "
                          f"against; put it under the root, set data.root to its folder, or set "
                          f"data.allow_outside_root: true")
    if not jsonl.is_file():
        raise ConfigError(f"data.{split}: {jsonl} does not exist")
    strict = cfg.data.on_bad_record == "stop"
    if split == "train" and cfg.data.train_format != "records":
        return benchmark_records(cfg.data.train_format, jsonl, root, strict, cfg.data.allow_outside_root)
    return read_records(jsonl, strict=strict, root=root, allow_outside_root=cfg.data.allow_outside_root)


def benchmark_records(fmt: str, path: Path, root: Path, strict: bool,
                      allow_outside_root: bool) -> tuple[list[QARecord], list[dict]]:
    """A split file in a benchmark format (tspo_ray.data.benchmarks), with the checks of our own records: every
    malformed record is listed (and fails the job when strict), and video paths stay inside the root."""
    errors: list[dict] = []
    records = []
    for rec in load(fmt, path, None, errors=errors):
        try:
            check_video_path(rec.video, root, allow_outside_root)
            records.append(rec)
        except RecordError as err:
            errors.append({"where": f"{path} id {rec.id}", "reason": f"{path} id {rec.id!r}: {err}"})
    if strict and errors:
        raise RecordError(format_bad_records(errors, path))
    return records, errors


def fill_store(cfg, videos: Sequence[str], spec: StoreSpec, store: FeatureStore, encoder,
               extract: Extractor | None = None, progress: bool = True) -> dict:
    """Features of the videos not in the store yet: by `extract` when given, else by the single-process loop with
    `encoder`; returns the extraction counts."""
    if extract is None:
        return extract_local(videos, encoder, spec, store, progress=progress, retry_failed=cfg.features.retry_failed)
    return extract(videos, spec, store)


def prepare_split(cfg, split: str, encoder, extract: Extractor | None = None, max_questions: int | None = None,
                  progress: bool = True):
    """Records of a split -> features (extracted where missing) -> FeatureItems. Bad rows and videos are reported
    in the returned `problems` list (and the store's errors table) and left out; the rest goes on.

    `extract` fills the store with the videos not in it yet (default: the single-process loop with `encoder`);
    jobs on Ray pass tspo_ray.distributed.feature_pipeline.ray_extractor(cfg)."""
    root = Path(cfg.data.root)
    records, problems = split_records(cfg, split)
    if max_questions:
        records = records[:max_questions]
    spec = cfg.features.store_spec(encoder.name)
    store = FeatureStore(cfg.features.store)
    videos = list(dict.fromkeys(resolve_video(r, root) for r in records))
    counts = fill_store(cfg, videos, spec, store, encoder, extract, progress)
    num_frames = cfg.policy.num_frames if split == "train" else cfg.eval.num_frames
    items, skipped = load_items(records, root, store, spec, encoder, cfg.data.min_video_candidates, num_frames)
    return items, problems + skipped, counts
