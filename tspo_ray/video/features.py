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
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator

from tspo_ray.safe_files import (
    UnsafeFileError,
    WriterLock,
    read_jsonl_setting_aside,
    read_tensors,
    write_jsonl_atomic,
    write_tensors_atomic,
)
from tspo_ray.settings import ConfigError, Settings
from tspo_ray.video import frames as video_io
from tspo_ray.video.encoders import EncoderSpec

#: the fields of FeatureSpec that decide which frames a selector scores and what it sees of them
SPEC_FIELDS = ("fps", "max_candidates", "min_candidates", "frame_size", "encoder")
#: encoder fields that place the work (where, how many at once), not what the features are
PLACEMENT_FIELDS = ("device", "batch_size")


class FeatureSpec(Settings):
    """The features a selector scores: candidate rate and cap, frame size, encoder. A selector is trained and
    exported with one and every path (training, evaluation, benchmarks, Serve, lmms-eval) selects with the one
    recorded beside its weights, so it scores the same candidates, seen the same way, everywhere."""

    label: ClassVar[str] = "feature spec"
    section: ClassVar[str] = "features"
    fps: float = Field(1.0, gt=0)
    """Candidate sampling rate: every round(native_fps / fps)-th native frame (fps 1 = the reference's 1-fps grid)."""
    max_candidates: int | None = Field(128, ge=1)
    """T_c: the most candidate frames per video (re-sampled evenly over the video beyond); null = the whole grid."""
    min_candidates: int | None = Field(None, ge=1)
    """With max_candidates: grids shorter than this are re-sampled to max_candidates too (the reference trains with 50)."""
    frame_size: int | None = Field(64, ge=8)
    """Frames are resized to size x size inside the decoding worker; null (or 'native'): decoded at native size and
    left to the encoder's own preprocessing (with encoder.exact_processor, the CLIP processor's pipeline)."""
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)
    """The CLIP encoder that produces F_f and F_t."""

    @field_validator("frame_size", mode="before")
    @classmethod
    def _native(cls, value: Any) -> Any:
        return None if value == "native" else value

    def spec(self) -> "FeatureSpec":
        """Only the spec's fields (a section that holds more, e.g. the job config's features, gives its spec)."""
        return FeatureSpec(**{name: getattr(self, name) for name in SPEC_FIELDS})

    def features_dict(self) -> dict[str, Any]:
        """The spec without the encoder's placement (device, batch size): what makes two specs' features equal."""
        out = {name: getattr(self, name) for name in SPEC_FIELDS}
        enc = {k: v for k, v in self.encoder.to_dict().items() if k not in PLACEMENT_FIELDS}
        if enc.get("model") and Path(enc["model"]).exists():  # one local folder however it is spelt
            enc["model"] = str(Path(enc["model"]).resolve())
        return {**out, "encoder": enc}

    def conflicts(self, given: "FeatureSpec", fields: Iterable[str]) -> list[str]:
        """The fields among `fields` where `given` asks for other features than this spec (placement aside)."""
        mine, theirs = self.features_dict(), given.features_dict()
        return [f for f in SPEC_FIELDS if f in set(fields) and mine[f] != theirs[f]]

    def adopt(self, given: "FeatureSpec", where: str, source: str) -> "FeatureSpec":
        """This spec (a selector's), with the encoder placed as `given` places it; ConfigError when a field that
        `given` sets explicitly asks for other features. Why not let it override: the selector would score other
        candidates, or frames seen otherwise, than it was trained and validated on, and pick other frames on this
        path than on the others."""
        clash = self.conflicts(given, given.model_fields_set)
        if clash:
            mine, theirs = self.features_dict(), given.features_dict()
            detail = "; ".join(f"{where}.{f} is {_shown(f, theirs[f])}, the selector's is {_shown(f, mine[f])}"
                               for f in clash)
            raise ConfigError(f"{detail}: the selector at {source} records the features it scores, and every path "
                              f"takes them from there; drop the setting (or give the same value)")
        placement = {k: getattr(given.encoder, k) for k in PLACEMENT_FIELDS if k in given.encoder.model_fields_set}
        return self.model_copy(update={"encoder": self.encoder.model_copy(update=placement)})

    def store_spec(self, encoder_name: str) -> "StoreSpec":
        """The feature-store key fields of this spec, with the loaded encoder's name."""
        return StoreSpec(self.fps, self.max_candidates, self.frame_size, encoder_name, self.min_candidates)


def _shown(field: str, value: Any) -> str:
    """A spec value in an error message; None said as what it means for the field."""
    if value is None and field in ("frame_size", "max_candidates"):
        return "native" if field == "frame_size" else "null (every candidate)"
    return repr(value)


def reference_feature_spec(folder: str | Path) -> FeatureSpec:
    """The TSPO-0.4B layout's features when its folder records none: the reference's pipeline, every candidate of
    the 1-fps grid decoded at native size through the folder's own CLIP and its saved processor."""
    folder = Path(folder)
    return FeatureSpec(fps=1.0, max_candidates=None, frame_size=None,
                       encoder=EncoderSpec(backend="hf", model=str(folder),
                                           exact_processor=(folder / "preprocessor_config.json").exists()))


@dataclass(frozen=True)
class StoreSpec:
    """Everything that determines a video's entry in the feature store besides the file itself (a FeatureSpec with
    its encoder loaded: store_spec)."""

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


def compute_video_features(path: str | Path, encoder, spec: StoreSpec, batch_size: int = 64,
                           chunk: int = 256) -> VideoFeatures:
    """Decode the candidates (resized in this process) and encode them, `chunk` frames at a time from one decoding
    pass, so memory holds one chunk of pixels even at 16k candidates. Raises VideoError for unusable videos."""
    cands = video_candidates(path, spec)
    feats = [encoder.encode_frames(frames, batch_size=batch_size)
             for frames in video_io.iter_frames(path, cands.frame_indices, spec.frame_size, chunk=chunk)]
    return assemble_features(feats, cands.frame_indices, cands.timestamps_s, cands.info.duration_s, path)


def video_candidates(path: str | Path, spec: StoreSpec) -> video_io.Candidates:
    """The candidate frames a spec asks of a video (raises VideoError for unusable videos)."""
    return video_io.candidates(path, spec.fps, spec.max_candidates, spec.min_candidates)


def assemble_features(chunk_features: Sequence[torch.Tensor], frame_indices, timestamps_s, duration_s: float,
                      path: str | Path) -> VideoFeatures:
    """A store entry from the features of a video's chunks, in order: the one place both extraction paths (this
    process and the Ray Data pipeline) build an entry, so they write the same thing."""
    # float16 as stored: features computed here and features read back from the store select the same frames
    return VideoFeatures(torch.cat(list(chunk_features)).half(), np.asarray(frame_indices).astype(np.int64),
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




def plan_extraction(videos: Sequence[str], spec: StoreSpec, store: FeatureStore, retry_failed: bool = False):
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


def extract_local(videos: Sequence[str], encoder, spec: StoreSpec, store: FeatureStore,
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
