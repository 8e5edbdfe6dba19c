"""The QA record schema and atomic JSONL IO.

A record's `video` is a path relative to the data root (the folder of the split files); read_records checks that it
stays inside that root (no `..`, no absolute path or symlink leading out) unless the caller allows outside paths.
Every malformed line is reported as `file:line: reason`; nothing in a record raises anything but RecordError.
"""
from __future__ import annotations

import json
import math
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

QUESTION_TYPES = ("general", "needle")
# The longest real benchmark questions (MLVU/LVBench, options inline) are ~2,000 characters and CLIP reads only
# the first 77 tokens: 8,000 leaves room for any real question while refusing runaway fields (a 1 MB "question").
MAX_QUESTION_CHARS = 8000
MAX_OPTION_CHARS = 4000
MAX_ID_CHARS = 512


class RecordError(ValueError):
    """A malformed QA record; the message names the record and the reason."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_id(raw: dict) -> str:
    rid = raw["id"]
    if not (isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))):
        raise RecordError(f"'id' must be a string or an integer, got {json.dumps(rid)}")
    rid = str(rid)
    if not rid.strip() or len(rid) > MAX_ID_CHARS:
        raise RecordError(f"'id' must be a non-empty string of at most {MAX_ID_CHARS} characters")
    return rid


def _check_question(value: Any) -> str:
    if not isinstance(value, str):
        raise RecordError(f"'question' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RecordError("'question' is empty")
    if len(value) > MAX_QUESTION_CHARS:
        raise RecordError(f"'question' has {len(value)} characters, more than the limit of {MAX_QUESTION_CHARS}")
    return value


def _check_options(options: Any) -> list[str]:
    if not isinstance(options, list):
        raise RecordError(f"'options' must be a list of strings, got {type(options).__name__}")
    if not 2 <= len(options) <= 26:
        raise RecordError(f"'options' must have 2..26 entries, got {len(options)}")
    for i, opt in enumerate(options):
        if not isinstance(opt, str):
            raise RecordError(f"'options'[{i}] must be a string, got {type(opt).__name__}")
        if len(opt) > MAX_OPTION_CHARS:
            raise RecordError(f"'options'[{i}] has {len(opt)} characters, more than {MAX_OPTION_CHARS}")
    return list(options)


def _check_duration(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise RecordError(f"'duration_s' must be a positive finite number of seconds, got {json.dumps(value)}")
    return float(value)


def _check_spans(value: Any, duration: float | None) -> list[list[float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"'target_spans' must be a list of [start_s, end_s] pairs, got {type(value).__name__}")
    spans = []
    for i, span in enumerate(value):
        if not (isinstance(span, list) and len(span) == 2 and all(_is_number(x) for x in span)):
            raise RecordError(f"'target_spans'[{i}] must be a [start_s, end_s] pair of numbers, got {json.dumps(span)}")
        start, end = float(span[0]), float(span[1])
        if not (math.isfinite(start) and math.isfinite(end)):
            raise RecordError(f"'target_spans'[{i}] {span} is not finite")
        if start < 0:
            raise RecordError(f"'target_spans'[{i}] {span} starts before 0 s")
        if end < start:
            raise RecordError(f"'target_spans'[{i}] {span} ends before it starts")
        if duration is not None and end > duration:
            raise RecordError(f"'target_spans'[{i}] {span} ends after the video's duration_s {duration}")
        spans.append([start, end])
    return spans


def check_video_path(video: Any, root: str | Path | None, allow_outside_root: bool = False) -> str:
    """`video` as given, if it is a non-empty path that stays inside root (no `..`, no absolute path or symlink out
    of it); root None checks only the type. RecordError otherwise."""
    if not isinstance(video, str) or not video.strip():
        raise RecordError(f"'video' must be a non-empty path string, got {json.dumps(video)}")
    if "\x00" in video:
        raise RecordError("'video' contains a NUL byte")
    if root is None or allow_outside_root:
        return video
    path = Path(video)
    if not path.is_absolute() and ".." in path.parts:
        raise RecordError(f"'video' {video!r} climbs out of the data root with '..' "
                          "(set data.allow_outside_root: true to allow paths outside it)")
    real_root = Path(root).resolve()
    try:
        real = (real_root / path).resolve()  # an absolute path replaces the root here
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise RecordError(f"'video' {video!r} cannot be resolved ({exc})") from None
    if real != real_root and real_root not in real.parents:
        how = "is an absolute path" if path.is_absolute() else "leads through a symlink"
        raise RecordError(f"'video' {video!r} {how} outside the data root "
                          "(set data.allow_outside_root: true to allow paths outside it)")
    return video


@dataclass(frozen=True)
class QARecord:
    id: str
    video: str  # relative to the data root (read_records checks it stays inside), or absolute where allowed
    question: str
    options: list[str]
    answer: str
    type: str = "general"
    target_spans: list[list[float]] = field(default_factory=list)
    duration_s: float | None = None
    # Free-form extras (e.g. the synthetic world's question family); never read by the answerers.
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def letters(self) -> str:
        return string.ascii_uppercase[: len(self.options)]

    @property
    def family(self) -> str:
        return str(self.meta.get("family", self.type))

    @classmethod
    def from_dict(cls, raw: Any, where: str = "record", root: str | Path | None = None,
                  allow_outside_root: bool = False) -> "QARecord":
        """A validated record, or RecordError "where: reason" (with the id when the record has a usable one)."""
        if not isinstance(raw, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        try:
            return cls._validated(raw, root, allow_outside_root)
        except RecordError as exc:
            rid = raw.get("id")
            named = f" id {rid!r}:" if isinstance(rid, (str, int)) and not isinstance(rid, bool) else ""
            raise RecordError(f"{where}:{named} {exc}") from None

    @classmethod
    def _validated(cls, raw: dict, root: str | Path | None, allow_outside_root: bool) -> "QARecord":
        for key in ("id", "video", "question", "options", "answer"):
            if key not in raw:
                raise RecordError(f"missing field {key!r}")
        rid = _check_id(raw)
        video = check_video_path(raw["video"], root, allow_outside_root)
        question = _check_question(raw["question"])
        options = _check_options(raw["options"])
        letters = string.ascii_uppercase[: len(options)]
        answer = raw["answer"].strip().upper() if isinstance(raw["answer"], str) else None
        if answer is None or len(answer) != 1 or answer not in letters:
            raise RecordError(f"'answer' {json.dumps(raw['answer'])} is not one of {list(letters)}")
        qtype = raw.get("type", "general")
        if qtype not in QUESTION_TYPES:
            raise RecordError(f"'type' {json.dumps(qtype)} is not one of {list(QUESTION_TYPES)}")
        duration = _check_duration(raw.get("duration_s"))
        spans = _check_spans(raw.get("target_spans"), duration)
        if qtype == "needle" and not spans:
            raise RecordError("needle records need 'target_spans'")
        meta = raw.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise RecordError(f"'meta' must be a JSON object, got {type(meta).__name__}")
        return cls(id=rid, video=video, question=question, options=options, answer=answer, type=qtype,
                   target_spans=spans, duration_s=duration, meta=dict(meta or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_line(data: bytes, where: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {exc.start + 1}); "
                          "re-encode the file as UTF-8") from None
    try:
        # NaN and Infinity are not JSON: refused here rather than read as floats
        return json.loads(text, parse_constant=lambda name: _raise(RecordError(f"{name} is not valid JSON")))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecordError as exc:
        raise RecordError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RecordError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise RecordError(f"{where}: not valid JSON ({exc})") from None


def _raise(exc: Exception):
    raise exc


def read_records(path: str | Path, strict: bool = True, root: str | Path | None = None,
                 allow_outside_root: bool = False) -> tuple[list[QARecord], list[dict[str, str]]]:
    """Read a QA JSONL: (records, errors), each error {"where": "file:line", "reason": "file:line: why"}.

    Every line is read and checked; ids must be unique within the file. With strict=True any bad line raises one
    RecordError listing all of them. Video paths must stay inside `root` (default: the file's folder) unless
    allow_outside_root.
    """
    path = Path(path)
    root = path.parent if root is None else root
    records, errors, first_line = [], [], {}
    with open(path, "rb") as fh:
        for lineno, data in enumerate(fh, 1):
            if not data.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = QARecord.from_dict(_parse_line(data, where), where, root, allow_outside_root)
                if rec.id in first_line:
                    raise RecordError(f"{where}: duplicate id {rec.id!r} (first on line {first_line[rec.id]})")
                first_line[rec.id] = lineno
                records.append(rec)
            except RecordError as err:
                errors.append({"where": where, "reason": str(err)})
    if strict and errors:
        raise RecordError(format_bad_records(errors, path))
    return records, errors


def format_bad_records(errors: list[dict[str, str]], path: str | Path, limit: int = 50) -> str:
    """'N malformed records in FILE:' and one line per error (the first `limit`)."""
    lines = [f"{len(errors)} malformed record{'s' * (len(errors) != 1)} in {path}:"]
    lines += [f"  {e['reason']}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
    return "\n".join(lines)


def format_skipped(problems: list[dict[str, str]], limit: int = 50) -> str:
    """A markdown section listing skipped questions and why (empty string when none were skipped)."""
    if not problems:
        return ""
    lines = [f"\nSkipped {len(problems)} question{'s' * (len(problems) != 1)}:", ""]
    for p in problems[:limit]:
        rid = p.get("id")
        lines.append(f"- {f'{rid}: ' if rid and rid not in p['reason'] else ''}{p['reason']}")
    if len(problems) > limit:
        lines.append(f"- ... and {len(problems) - limit} more")
    return "\n".join(lines)


def resolve_video(record: QARecord, data_root: str | Path) -> str:
    """Record video paths are relative to the dataset folder (absolute paths are kept)."""
    p = Path(record.video)
    # absolute, so that Ray workers with another working directory find the file
    return str(p if p.is_absolute() else (Path(data_root) / p).absolute())


def resolve_video_path(video: str | Path, jsonl_path: str | Path) -> Path:
    """A record's video path made usable: absolute paths as they are, relative ones against the JSONL's folder."""
    p = Path(video)
    return p if p.is_absolute() else Path(jsonl_path).parent / p

