"""The frame-index export that lmms-eval adaptations read: the benchmark's own annotation file, written back with
one added key per question, `frame_idx`.

TSPO's and AKS's adapted lmms-eval models load the file named by the LMMSJSON environment variable as the task's
dataset and read `doc["frame_idx"]`: native frame numbers, sorted, as floats; they take the first 64 and fall back
to uniform sampling when fewer are given. So a question whose selection failed gets an empty list (uniform there),
never a missing key (which the dataset loader would turn into null).

Question ids, per benchmark (they must equal the QARecord ids of the importers):
  longvideobench `id` · mlvu and videomme `question_id` · lvbench (one line per video, questions in `qa`)
  `key` + `uid`, as the community TSVs write their index.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tspo_ray.safe_files import write_text_atomic

#: the most frames an adapted lmms-eval model reads from frame_idx
MAX_EXPORTED_FRAMES = 64
#: benchmarks whose own annotation file can carry frame_idx (the VLMEvalKit TSVs have no JSON of their own)
EXPORTABLE = ("longvideobench", "mlvu", "videomme", "lvbench")
_ID_FIELD = {"longvideobench": "id", "mlvu": "question_id", "videomme": "question_id"}


class ExportError(ValueError):
    """A benchmark file that cannot be written back; the message names the file, the entry and the reason."""


@dataclass
class BenchmarkDocument:
    """A benchmark annotation file as read: a JSON list (`json`) or one JSON object per line (`jsonl`)."""

    path: Path
    format: str
    rows: list[Any]


def read_document(path: str | Path) -> BenchmarkDocument:
    """Read a .json list or a .jsonl file; a malformed file or line is an ExportError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ExportError(f"{path}:{n}: not JSON ({exc.msg})") from None
        return BenchmarkDocument(path, "jsonl", rows)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise ExportError(f"{path}: expected a JSON list of questions, got {type(rows).__name__}")
    return BenchmarkDocument(path, "json", rows)


def question_entries(benchmark: str, doc: BenchmarkDocument) -> list[tuple[str, dict]]:
    """(question id, the JSON object that receives frame_idx) for every question of the file, in file order."""
    if benchmark not in EXPORTABLE:
        raise ExportError(f"{benchmark}: no annotation JSON of its own to write frame_idx into "
                          f"(exportable: {', '.join(EXPORTABLE)})")
    out: list[tuple[str, dict]] = []
    for n, row in enumerate(doc.rows, 1):
        where = f"{doc.path}: entry {n}"
        if not isinstance(row, dict):
            raise ExportError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if benchmark == "lvbench":
            if "key" not in row or not isinstance(row.get("qa"), list):
                raise ExportError(f"{where}: an LVBench video line needs 'key' and a 'qa' list")
            for m, qa in enumerate(row["qa"], 1):
                if not isinstance(qa, dict) or "uid" not in qa:
                    raise ExportError(f"{where} (key={row['key']!r}), qa {m}: needs an object with 'uid'")
                out.append((f"{row['key']}{qa['uid']}", qa))
            continue
        field = _ID_FIELD[benchmark]
        if field not in row:
            raise ExportError(f"{where}: missing {field!r}, the {benchmark} question id")
        out.append((str(row[field]), row))
    seen: set[str] = set()
    for qid, _ in out:
        if qid in seen:
            raise ExportError(f"{doc.path}: question id {qid!r} appears twice")
        seen.add(qid)
    return out


def frame_idx_value(frame_indices: Sequence[int]) -> list[float]:
    """The exported value: distinct native frame numbers, sorted, as floats; more than 64 is an error (the readers
    would silently keep only the earliest 64)."""
    value = sorted({float(i) for i in frame_indices})
    if len(value) > MAX_EXPORTED_FRAMES:
        raise ExportError(f"frame_idx: {len(value)} frames, but lmms-eval adaptations read at most "
                          f"{MAX_EXPORTED_FRAMES}; select at most {MAX_EXPORTED_FRAMES}")
    return value


def export_frame_idx(benchmark: str, annotations: str | Path, selections: dict[str, Sequence[int]],
                     out_path: str | Path) -> dict[str, int]:
    """Write the annotation file to out_path with frame_idx on every question: the selection of its id, or [] (the
    readers' uniform fallback) when it has none. Atomic. Returns counts: questions, exported, empty, and unmatched
    (selections whose id is not a question of the file: the records and the file disagree)."""
    doc = read_document(annotations)
    entries = question_entries(benchmark, doc)
    counts = {"questions": 0, "exported": 0, "empty": 0,
              "unmatched": len(set(selections) - {qid for qid, _ in entries})}
    for qid, entry in entries:
        picked = selections.get(qid)
        entry["frame_idx"] = frame_idx_value(picked) if picked else []
        counts["questions"] += 1
        counts["exported" if picked else "empty"] += 1
    if doc.format == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in doc.rows)
    else:
        text = json.dumps(doc.rows, ensure_ascii=False)
    write_text_atomic(out_path, text)
    return counts
