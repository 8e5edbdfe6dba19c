"""Benchmark evaluation with resume: select frames for every question of a benchmark (optionally answer them), and
write the benchmark's own annotation file back with `frame_idx` per question (data/frame_idx_export.py).

Every finished question is appended to `partial.jsonl` in the output folder (one JSON line, flushed and synced),
so a killed run resumes without redoing finished questions; a torn or unreadable line is set aside in
`partial.jsonl.set-aside` with a warning, and the lines after it still count. `run.json` pins the settings of the
folder: a restart with other settings is refused rather than mixed in. A run holds the folder's `.lock` while it
runs: a second run on the same folder is refused, naming the first one's pid.

Selection and answering come in as callables, so this module owns only the run: the job (tspo_ray/evaluation/benchmark_job.py)
builds them from the feature store, the config's selectors and answerer. With answers, accuracy is broken down as
each benchmark's own table does it (tspo_ray/evaluation/breakdown.py) into summary.json and table.md.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tspo_ray.data.frame_idx_export import EXPORTABLE, ExportError, export_frame_idx, frame_idx_value
from tspo_ray.data.records import QARecord, RecordError
from tspo_ray.evaluation.breakdown import breakdown, format_breakdown_table
from tspo_ray.safe_files import LockedError, WriterLock, fsync_dir, read_jsonl_setting_aside, write_text_atomic

#: a selection: {"frame_indices": [...], "timestamps_s": [...], "scores": [...] or None, "video": the path to answer
#: from}; raises ValueError for a question it cannot serve (no features, unreadable video), recorded with the reason
SelectFn = Callable[[QARecord, str], dict]
#: answers for a chunk of (record, selection) pairs: one {"predicted", "output", "error"} dict per pair, in order
AnswerFn = Callable[[Sequence[tuple[QARecord, dict]]], list[dict]]
#: called after each chunk is recorded, with the chunk's rows (progress reporting; tests interrupt a run here)
ChunkHook = Callable[[list[dict]], None]


class BenchmarkRunError(RuntimeError):
    """A benchmark run that cannot go on (settings differ from the folder's run, no records); names the reason."""


def load_benchmark_records(name: str, annotations: str | Path, video_root: str | Path | None,
                           answer: bool = True) -> list[QARecord]:
    """The benchmark's questions as QARecords (tspo_ray.data.benchmarks.load), ids being its own question ids.

    `tsv` and `tspo10k` have no annotation JSON of their own to write frame_idx into: they run only to answer
    (accuracy), so without `answer` they are refused here, before any work."""
    from tspo_ray.data.benchmarks import FORMATS, load

    if name not in FORMATS:
        raise BenchmarkRunError(f"--benchmark {name!r}: unknown benchmark; known: {', '.join(sorted(FORMATS))}")
    if name not in EXPORTABLE and not answer:
        raise BenchmarkRunError(f"--benchmark {name}: its files have no annotation JSON of their own to write "
                                f"frame_idx into (frame_idx export: {', '.join(EXPORTABLE)}); add --answer to "
                                "report accuracy only")
    try:
        return load(name, annotations, video_root)
    except RecordError as exc:
        raise BenchmarkRunError(str(exc)) from None


class PartialResults:
    """The append-only results file of a run: one JSON line per finished (selector, question)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[tuple[str, str], dict]:
        """Finished rows by (selector, id). A line torn by a kill, or otherwise unreadable, is set aside (kept in
        partial.jsonl.set-aside, named in a warning); the rows after it are kept."""
        rows = read_jsonl_setting_aside(self.path, lambda row: isinstance(row, dict) and isinstance(
            row.get("selector"), str) and isinstance(row.get("id"), str))
        return {(row["selector"], row["id"]): row for row in rows}

    def append(self, rows: Sequence[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())
        if created:  # the new file's name is durable too
            fsync_dir(self.path.parent)


@dataclass
class BenchmarkRun:
    """One benchmark run in one output folder."""

    name: str
    annotations: Path
    out_dir: Path
    selectors: list[str]
    num_frames: int
    #: the run's other settings that must not change on resume (checkpoint, encoder, answerer...)
    settings: dict[str, Any]

    @property
    def partial(self) -> PartialResults:
        return PartialResults(self.out_dir / "partial.jsonl")

    def pin_settings(self) -> None:
        """Write run.json, or check that the folder's run has the same settings."""
        pinned = {"benchmark": self.name, "annotations": str(self.annotations.resolve()), "selectors": self.selectors,
                  "num_frames": self.num_frames, **self.settings}
        path = self.out_dir / "run.json"
        if path.exists():
            before = json.loads(path.read_text())
            changed = sorted(k for k in set(before) | set(pinned) if before.get(k) != pinned.get(k))
            if changed:
                raise BenchmarkRunError(f"{self.out_dir} holds a run with other settings ({', '.join(changed)}); "
                                        "use another --out, or delete the folder to start over")
        else:
            write_text_atomic(path, json.dumps(pinned, indent=2, sort_keys=True))

    @property
    def exports(self) -> bool:
        """Whether the benchmark's own file is written back with frame_idx (tsv / tspo10k: accuracy only)."""
        return self.name in EXPORTABLE

    def frame_idx_path(self, selector: str) -> Path:
        """Where a selector's export goes: the benchmark file's own name, under frame_idx/<selector>/."""
        return self.out_dir / "frame_idx" / selector.replace(":", "_") / self.annotations.name


def _selection_row(record: QARecord, selector: str, select: SelectFn) -> dict:
    row = {"id": record.id, "selector": selector, "frame_indices": [], "timestamps_s": [], "scores": None,
           "error": None, "answer": record.answer, "meta": record.meta}
    try:
        sel = select(record, selector)
        frame_idx_value(sel["frame_indices"])  # over the export limit: an error now, not at write-back
        row.update(frame_indices=[int(i) for i in sel["frame_indices"]], video=sel.get("video"),
                   timestamps_s=[float(t) for t in sel["timestamps_s"]], scores=sel.get("scores"))
    except (ValueError, OSError, ExportError) as exc:
        row["error"] = f"{record.id}: {exc}"
    return row


def run_benchmark(run: BenchmarkRun, records: Sequence[QARecord], select: SelectFn, answer: AnswerFn | None = None,
                  chunk_size: int = 16, progress: bool = True, on_chunk: ChunkHook | None = None,
                  notes: dict | None = None) -> dict:
    """Select (and answer) every question not finished yet, appending each chunk to partial.jsonl; then write the
    frame_idx export per selector and summary.json (with `notes`, e.g. this run's feature counts). Returns the
    summary."""
    if not records:
        raise BenchmarkRunError(f"--benchmark {run.name}: no questions read from {run.annotations}")
    run.out_dir.mkdir(parents=True, exist_ok=True)
    with _holding(run.out_dir):
        return _run_locked(run, records, select, answer, chunk_size, progress, on_chunk, notes)


@contextlib.contextmanager
def _holding(out_dir: Path):
    """The output folder's lock for the run's whole length; BenchmarkRunError naming the holder when taken."""
    try:
        lock = WriterLock(out_dir / ".lock", f"{out_dir} (a benchmark run's --out)").__enter__()
    except LockedError as exc:
        raise BenchmarkRunError(str(exc)) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _run_locked(run: BenchmarkRun, records: Sequence[QARecord], select: SelectFn, answer: AnswerFn | None,
                chunk_size: int, progress: bool, on_chunk: ChunkHook | None, notes: dict | None) -> dict:
    from tqdm import tqdm

    run.pin_settings()
    done = run.partial.load()
    # question-major: the selectors of one question run together, so a video's features are read once
    todo = [(s, r) for r in records for s in run.selectors if (s, r.id) not in done]
    bar = tqdm(total=len(run.selectors) * len(records), initial=len(run.selectors) * len(records) - len(todo),
               desc=f"{run.name}", unit="q", disable=not progress)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        rows = [_selection_row(rec, sel, select) for sel, rec in chunk]
        if answer is not None:
            _answer_rows(chunk, rows, answer, any_answered=any(r.get("answer_error") is None and "correct" in r
                                                               for r in done.values()))
        run.partial.append(rows)
        done.update({(row["selector"], row["id"]): row for row in rows})
        bar.update(len(rows))
        if on_chunk is not None:
            on_chunk(rows)
    bar.close()
    return write_outputs(run, records, done, notes)


def _answer_rows(chunk: Sequence[tuple[str, QARecord]], rows: list[dict], answer: AnswerFn,
                 any_answered: bool) -> None:
    """Answer the selected rows in place. Nothing answered so far and this whole chunk rejected: a set-up failure
    (e.g. an answerer sized for fewer frames), raised before anything is recorded as finished."""
    from tspo_ray.evaluation.accuracy import AllRequestsRejected

    ok = [i for i, row in enumerate(rows) if row["error"] is None]
    got = answer([(chunk[i][1], rows[i]) for i in ok])
    if ok and not any_answered and all(g.get("error") for g in got):
        raise AllRequestsRejected(f"the answerer rejected all {len(ok)} requests of the first chunk; first reason: "
                                  f"{got[0]['error']}")
    for i, g in zip(ok, got):
        rows[i].update(predicted=g.get("predicted"), output=g.get("output"), answer_error=g.get("error"),
                       correct=float(g.get("predicted") == rows[i]["answer"]))


def write_outputs(run: BenchmarkRun, records: Sequence[QARecord], done: dict[tuple[str, str], dict],
                  notes: dict | None = None) -> dict:
    """The frame_idx export of every selector, summary.json (counts, failures, the accuracy breakdown where
    answered) and table.md (the breakdown table, when answered)."""
    summary: dict[str, Any] = {"benchmark": run.name, "questions": len(records), **(notes or {}), "selectors": {}}
    results = {}
    for selector in run.selectors:
        rows = [done[(selector, r.id)] for r in records]
        entry: dict[str, Any] = {"failed": [row["error"] for row in rows if row["error"] is not None]}
        if run.exports:
            picked = {row["id"]: row["frame_indices"] for row in rows if row["error"] is None}
            counts = export_frame_idx(run.name, run.annotations, picked, run.frame_idx_path(selector))
            entry.update(frame_idx_file=str(run.frame_idx_path(selector)), **counts)
        else:
            entry.update(frame_idx_file=None, questions=len(rows), exported=0, empty=len(rows))
        if any("correct" in row for row in rows):
            results[selector] = breakdown(run.name, rows)
            entry.update(accuracy=results[selector]["overall"], answered=results[selector]["answered"],
                         breakdown=results[selector])
        summary["selectors"][selector] = entry
    if results:
        summary["table"] = format_breakdown_table(run.name, results)
        write_text_atomic(run.out_dir / "table.md", summary["table"] + "\n")
    write_text_atomic(run.out_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
