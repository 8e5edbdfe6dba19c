"""The QA record schema (DESIGN.md "Records") and atomic JSONL IO.

A record's `video` is a path relative to the folder of the JSONL file that holds it (absolute paths are kept as
they are); resolve_video_path turns it into a usable path.
"""
from __future__ import annotations

import json
import os
import string
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

QUESTION_TYPES = ("general", "needle")


class RecordError(ValueError):
    """A malformed QA record; the message names the record and the reason."""


@dataclass(frozen=True)
class QARecord:
    id: str
    video: str  # relative to the JSONL's folder, or absolute (resolve_video_path)
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
    def from_dict(cls, raw: Any, where: str = "record") -> "QARecord":
        if not isinstance(raw, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        rid = raw.get("id", "<no id>")
        where = f"{where} (id={rid!r})"
        for key in ("id", "video", "question", "options", "answer"):
            if key not in raw:
                raise RecordError(f"{where}: missing field {key!r}")
        if not isinstance(raw["question"], str) or not raw["question"].strip():
            raise RecordError(f"{where}: 'question' must be a non-empty string")
        options = raw["options"]
        if not isinstance(options, list) or not 2 <= len(options) <= 26 or not all(isinstance(o, str) for o in options):
            raise RecordError(f"{where}: 'options' must be a list of 2..26 strings")
        letters = string.ascii_uppercase[: len(options)]
        answer = str(raw["answer"]).strip().upper()
        if len(answer) != 1 or answer not in letters:
            raise RecordError(f"{where}: 'answer' {raw['answer']!r} is not one of {list(letters)}")
        qtype = raw.get("type", "general")
        if qtype not in QUESTION_TYPES:
            raise RecordError(f"{where}: 'type' {qtype!r} is not one of {QUESTION_TYPES}")
        spans = raw.get("target_spans") or []
        try:
            spans = [[float(a), float(b)] for a, b in spans]
        except (TypeError, ValueError):
            raise RecordError(f"{where}: 'target_spans' must be a list of [start_s, end_s] pairs") from None
        if any(b < a for a, b in spans):
            raise RecordError(f"{where}: a target span ends before it starts: {spans}")
        if qtype == "needle" and not spans:
            raise RecordError(f"{where}: needle records need 'target_spans'")
        duration = raw.get("duration_s")
        return cls(
            id=str(raw["id"]),
            video=str(raw["video"]),
            question=raw["question"],
            options=list(options),
            answer=answer,
            type=qtype,
            target_spans=spans,
            duration_s=None if duration is None else float(duration),
            meta=dict(raw.get("meta") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_records(path: str | Path, strict: bool = True) -> tuple[list[QARecord], list[dict[str, str]]]:
    """Read a QA JSONL. Returns (records, errors); with strict=True the first bad line raises."""
    records, errors = [], []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                err = RecordError(f"{where}: not valid JSON ({exc.msg})")
                if strict:
                    raise err from None
                errors.append({"where": where, "reason": str(err)})
                continue
            try:
                records.append(QARecord.from_dict(raw, where))
            except RecordError as err:
                if strict:
                    raise
                errors.append({"where": where, "reason": str(err)})
    return records, errors


def resolve_video_path(video: str | Path, jsonl_path: str | Path) -> Path:
    """A record's video path made usable: absolute paths as they are, relative ones against the JSONL's folder."""
    p = Path(video)
    return p if p.is_absolute() else Path(jsonl_path).parent / p


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows to path via a temp file + rename so readers never see a half-written file."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; written data is for every reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
