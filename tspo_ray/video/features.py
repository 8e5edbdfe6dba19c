"""The feature store: CLIP features of each video's candidate frames and of question stems, shared between runs.

A video's entry is keyed by (video identity, fps, T_c, frame size, encoder), where the identity is the resolved path
plus size and modification time, so an edited file is re-encoded and two runs with the same settings share entries.
Entries are single files written atomically and durably; failures go to an errors table (errors.jsonl) with the
reason. The two shared files that are read, merged and rewritten (question features, errors.jsonl) are updated under
a lock file beside them, so concurrent writers (two jobs on one store) lose nothing; an unreadable line of
errors.jsonl is set aside in errors.jsonl.set-aside with a warning.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from tspo_ray.safe_files import (
    UnsafeFileError,
    WriterLock,
    read_jsonl_setting_aside,
    read_tensors,
    write_jsonl_atomic,
    write_tensors_atomic,
)
from tspo_ray.video import frames as video_io


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines a video's features besides the file itself."""

    fps: float
    max_candidates: int | None
    frame_size: int | None
    encoder_name: str
    min_candidates: int | None = None

    def video_key(self, path: str | Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        ident = f"{path}|{st.st_size}|{st.st_mtime_ns}|{self.fps}|{self.max_candidates}|{self.frame_size}|{self.encoder_name}"
        if self.min_candidates:
            ident += f"|min{self.min_candidates}"
        return hashlib.sha1(ident.encode()).hexdigest()[:24]


@dataclass
class VideoFeatures:
    frame_features: torch.Tensor  # float16 [T, D] (stored compactly; cast to float32 on use)
    frame_indices: np.ndarray  # int64 [T]
    timestamps_s: np.ndarray  # float64 [T]
    duration_s: float
    video: str

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors = {"frame_features": self.frame_features.half(),
                   "frame_indices": torch.from_numpy(self.frame_indices),
                   "timestamps_s": torch.from_numpy(self.timestamps_s)}
        return tensors, {"duration_s": repr(float(self.duration_s)), "video": self.video}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], meta: dict[str, str]) -> "VideoFeatures":
        return cls(t["frame_features"], t["frame_indices"].numpy(), t["timestamps_s"].numpy(),
                   float(meta["duration_s"]), meta["video"])


def compute_video_features(path: str | Path, encoder, spec: FeatureSpec, batch_size: int = 64,
                           chunk: int = 256) -> VideoFeatures:
    """Decode the candidates (resized in this process) and encode them, `chunk` frames at a time from one decoding
    pass, so memory holds one chunk of pixels even at 16k candidates. Raises VideoError for unusable videos."""
    cands = video_candidates(path, spec)
    feats = [encoder.encode_frames(frames, batch_size=batch_size)
             for frames in video_io.iter_frames(path, cands.frame_indices, spec.frame_size, chunk=chunk)]
    return assemble_features(feats, cands.frame_indices, cands.timestamps_s, cands.info.duration_s, path)


def video_candidates(path: str | Path, spec: FeatureSpec) -> video_io.Candidates:
    """The candidate frames a spec asks of a video (raises VideoError for unusable videos)."""
    return video_io.candidates(path, spec.fps, spec.max_candidates, spec.min_candidates)


def assemble_features(chunk_features: Sequence[torch.Tensor], frame_indices, timestamps_s, duration_s: float,
                      path: str | Path) -> VideoFeatures:
    """A store entry from the features of a video's chunks, in order: the one place both extraction paths (this
    process and the Ray Data pipeline) build an entry, so they write the same thing."""
    return VideoFeatures(torch.cat(list(chunk_features)).float(), np.asarray(frame_indices).astype(np.int64),
                         np.asarray(timestamps_s).astype(np.float64), float(duration_s), str(path))


class FeatureStore:
    """A folder of video feature files (videos/<key>.safetensors), question-stem features
    (text/<encoder>.safetensors) and errors.jsonl. Only safetensors are read: entries of the earlier pickle format
    (.pt) are ignored (so re-encoded), and a file that is not valid safetensors is refused, never unpickled."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()

    def video_path(self, key: str) -> Path:
        return self.root / "videos" / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.video_path(key).exists()

    def put(self, key: str, feats: VideoFeatures) -> None:
        write_tensors_atomic(self.video_path(key), *feats.to_tensors())

    def get(self, key: str) -> VideoFeatures:
        """The stored features, or UnsafeFileError naming the file when it is not a valid entry."""
        path = self.video_path(key)
        tensors, meta = read_tensors(path)
        try:
            return VideoFeatures.from_tensors(tensors, meta)
        except (KeyError, ValueError) as exc:
            raise UnsafeFileError(f"{path}: not a feature-store entry (missing {exc}); "
                                  "delete it to re-encode") from None

    # --- question stems -------------------------------------------------------------------------------------------
    def _text_path(self, encoder_name: str) -> Path:
        slug = hashlib.sha1(encoder_name.encode()).hexdigest()[:16]
        return self.root / "text" / f"{slug}.safetensors"

    def _read_text(self, path: Path) -> dict[str, torch.Tensor]:
        if not path.exists():
            return {}
        tensors, meta = read_tensors(path)
        try:
            questions = json.loads(meta["questions"])
            feats = tensors["features"]
            assert isinstance(questions, list) and len(questions) == len(feats)
        except (KeyError, ValueError, AssertionError):
            raise UnsafeFileError(f"{path}: not a question-feature file; delete it to re-encode") from None
        return dict(zip(questions, feats))

    def _lock(self, path: Path) -> WriterLock:
        """The lock of one shared file's read-merge-write (waited for: other writers hold it only briefly)."""
        return WriterLock(path.with_name(path.name + ".lock"), str(path), wait=True)

    def text_features(self, encoder, questions: Iterable[str]) -> dict[str, torch.Tensor]:
        """Features of question stems, encoding only the ones not stored yet. Encoding runs unlocked; the new
        features are merged into the file as it is then, under its lock, so a concurrent writer's are kept."""
        path = self._text_path(encoder.name)
        cache = self._read_text(path)
        missing = sorted({q for q in questions if q not in cache})
        if missing:
            new = {}
            for start in range(0, len(missing), 256):
                chunk = missing[start : start + 256]
                for q, f in zip(chunk, encoder.encode_text(chunk).float()):
                    new[q] = f.clone()
            with self._lock(path):
                cache = {**self._read_text(path), **new}
                write_tensors_atomic(path, {"features": torch.stack(list(cache.values()))},
                                     {"questions": json.dumps(list(cache))})
        return cache

    # --- errors -------------------------------------------------------------------------------------------------
    @property
    def errors_path(self) -> Path:
        return self.root / "errors.jsonl"

    def errors(self) -> list[dict]:
        if not self.errors_path.exists():
            return []
        try:
            with self._lock(self.errors_path):
                return self._read_errors()
        except PermissionError:  # a store this process may only read: its readable rows, nothing set aside
            rows = []
            for line in self.errors_path.read_text(errors="replace").splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
            return [e for e in rows if isinstance(e, dict) and "video" in e]

    def _read_errors(self) -> list[dict]:
        return read_jsonl_setting_aside(self.errors_path, lambda e: isinstance(e, dict) and "video" in e)

    def record_errors(self, new_errors: Sequence[dict]) -> None:
        """Merge errors into the table (one row per video; a later success elsewhere does not erase history), under
        the table's lock: rows another writer adds meanwhile are kept."""
        with self._lock(self.errors_path):
            rows = {e["video"]: e for e in self._read_errors()}
            rows.update({e["video"]: e for e in new_errors})
            write_jsonl_atomic(self.errors_path, rows.values())

    def failed_keys(self) -> dict[str, str]:
        """Feature keys of videos that failed to decode, with the reason (rows written with their key)."""
        return {e["key"]: e["reason"] for e in self.errors() if e.get("key")}


def feature_spec(cfg, encoder_name: str) -> FeatureSpec:
    """The store spec of a config's features section."""
    f = cfg.features
    return FeatureSpec(f.fps, f.max_candidates, f.frame_size, encoder_name, f.min_candidates)


def plan_extraction(videos: Sequence[str], spec: FeatureSpec, store: FeatureStore, retry_failed: bool = False):
    """Which distinct videos still need encoding: ([(path, key)], counts, errors of files that cannot be read).

    A video that failed before with the same key (same file size, mtime and feature settings) is not decoded again
    unless retry_failed: its earlier reason stands (counted as "known_bad"). An edited file has a new key and is tried.
    """
    counts = {"encoded": 0, "cached": 0, "failed": 0, "known_bad": 0}
    known_bad = {} if retry_failed else store.failed_keys()
    todo, errors = [], []
    for path in dict.fromkeys(str(v) for v in videos):
        try:
            key = spec.video_key(path)
        except OSError as exc:
            counts["failed"] += 1
            errors.append({"video": path, "reason": f"{path}: {exc.strerror or exc}"})
            continue
        if store.has(key):
            counts["cached"] += 1
        elif key in known_bad:
            counts["known_bad"] += 1
        else:
            todo.append((path, key))
    return todo, counts, errors


def extract_local(videos: Sequence[str], encoder, spec: FeatureSpec, store: FeatureStore,
                  progress: bool = True, retry_failed: bool = False) -> dict[str, int]:
    """The single-process extraction loop (reference for the Ray Data pipeline): returns counts."""
    from tqdm import tqdm

    todo, counts, errors = plan_extraction(videos, spec, store, retry_failed)
    for path, key in tqdm(todo, desc="features", disable=not progress):
        try:
            store.put(key, compute_video_features(path, encoder, spec))
            counts["encoded"] += 1
        except (video_io.VideoError, OSError) as exc:
            counts["failed"] += 1
            errors.append({"video": path, "key": key, "reason": str(exc)})
    if errors:
        store.record_errors(errors)
    return counts
