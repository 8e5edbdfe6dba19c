"""Benchmark evaluation with resume: select frames for every question of a benchmark (optionally answer them), and
write the benchmark's own annotation file back with `frame_idx` per question (data/frame_idx_export.py).

Every finished question is appended to `partial.jsonl` in the output folder (one JSON line, flushed and synced),
so a killed run resumes without redoing finished questions; a torn last line is dropped. `run.json` pins the
settings of the folder: a restart with other settings is refused rather than mixed in.

Selection and answering come in as callables, so this module owns only the run: the job (jobs/evaluate.py) builds
them from the feature store, the config's selectors and answerer.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tspo_ray.data.frame_idx_export import ExportError, export_frame_idx, frame_idx_value
from tspo_ray.data.records import QARecord, write_text_atomic

#: a selection: {"frame_indices": [...], "timestamps_s": [...], "scores": [...] or None, "video": the path to answer
#: from}; raises ValueError for a question it cannot serve (no features, unreadable video), recorded with the reason
SelectFn = Callable[[QARecord, str], dict]
#: answers for a chunk of (record, selection) pairs: one {"predicted", "output", "error"} dict per pair, in order
AnswerFn = Callable[[Sequence[tuple[QARecord, dict]]], list[dict]]


class BenchmarkRunError(RuntimeError):
    """A benchmark run that cannot go on (settings differ from the folder's run, no records); names the reason."""


def load_benchmark_records(name: str, annotations: str | Path, video_root: str | Path | None) -> list[QARecord]:
    """The benchmark's questions as QARecords, ids being the benchmark's own question ids.

    SEAM: the importers (tspo_ray.data.benchmarks.load(name, annotations, video_root) -> list[QARecord]) plug in here.
    """
    try:
        from tspo_ray.data.benchmarks import load  # noqa: PLC0415 (an optional module until the importers land)
    except ImportError:
        raise BenchmarkRunError(f"--benchmark {name}: this build has no benchmark importers "
                                "(tspo_ray.data.benchmarks.load)") from None
    return load(name, annotations, video_root)


class PartialResults:
    """The append-only results file of a run: one JSON line per finished (selector, question)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[tuple[str, str], dict]:
        """Finished rows by (selector, id). A last line cut short by a kill is dropped (and truncated away)."""
        if not self.path.exists():
            return {}
        done: dict[tuple[str, str], dict] = {}
        good_bytes = 0
        with open(self.path, "rb") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    done[(row["selector"], row["id"])] = row
                except (ValueError, KeyError, TypeError):
                    break  # a torn write: everything after it is unfinished
                good_bytes += len(line)
        if good_bytes < self.path.stat().st_size:
            os.truncate(self.path, good_bytes)
        return done

    def append(self, rows: Sequence[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())


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
                  chunk_size: int = 16, progress: bool = True) -> dict:
    """Select (and answer) every question not finished yet, appending each chunk to partial.jsonl; then write the
    frame_idx export per selector and summary.json. Returns the summary."""
    from tqdm import tqdm

    if not records:
        raise BenchmarkRunError(f"--benchmark {run.name}: no questions read from {run.annotations}")
    run.out_dir.mkdir(parents=True, exist_ok=True)
    run.pin_settings()
    done = run.partial.load()
    todo = [(s, r) for s in run.selectors for r in records if (s, r.id) not in done]
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
    bar.close()
    return write_outputs(run, records, done)


def _answer_rows(chunk: Sequence[tuple[str, QARecord]], rows: list[dict], answer: AnswerFn,
                 any_answered: bool) -> None:
    """Answer the selected rows in place. Nothing answered so far and this whole chunk rejected: a set-up failure
    (e.g. an answerer sized for fewer frames), raised before anything is recorded as finished."""
    from tspo_ray.evaluation import AllRequestsRejected

    ok = [i for i, row in enumerate(rows) if row["error"] is None]
    got = answer([(chunk[i][1], rows[i]) for i in ok])
    if ok and not any_answered and all(g.get("error") for g in got):
        raise AllRequestsRejected(f"the answerer rejected all {len(ok)} requests of the first chunk; first reason: "
                                  f"{got[0]['error']}")
    for i, g in zip(ok, got):
        rows[i].update(predicted=g.get("predicted"), output=g.get("output"), answer_error=g.get("error"),
                       correct=float(g.get("predicted") == rows[i]["answer"]))


def write_outputs(run: BenchmarkRun, records: Sequence[QARecord], done: dict[tuple[str, str], dict]) -> dict:
    """The frame_idx export of every selector and summary.json (counts, failures, accuracy where answered)."""
    summary: dict[str, Any] = {"benchmark": run.name, "questions": len(records), "selectors": {}}
    for selector in run.selectors:
        rows = [done[(selector, r.id)] for r in records]
        picked = {row["id"]: row["frame_indices"] for row in rows if row["error"] is None}
        counts = export_frame_idx(run.name, run.annotations, picked, run.frame_idx_path(selector))
        entry = {"frame_idx_file": str(run.frame_idx_path(selector)), **counts,
                 "failed": [row["error"] for row in rows if row["error"] is not None]}
        answered = [row for row in rows if "correct" in row]
        if answered:
            entry["accuracy"] = sum(row["correct"] for row in answered) / len(answered)
            entry["answered"] = len(answered)
        summary["selectors"][selector] = entry
    write_text_atomic(run.out_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


# --- the job: selection from the feature store, answers from the config's answerer ------------------------------------

def _answer_fn(answerer) -> AnswerFn:
    from tspo_ray.answerers.base import AnswerRequest

    def answer(pairs: Sequence[tuple[QARecord, dict]]) -> list[dict]:
        requests = [AnswerRequest(key=f"{rec.id}:{row['selector']}", video=row["video"],
                                  frame_indices=tuple(row["frame_indices"]), timestamps_s=tuple(row["timestamps_s"]),
                                  question=rec.question, options=tuple(rec.options), duration_s=rec.duration_s)
                    for rec, row in pairs]
        return [{"predicted": a.option, "output": a.text, "error": a.extra.get("error")}
                for a in answerer.answer(requests)]

    return answer


def run_benchmark_job(cfg, name: str, annotations: str | Path, videos: str | Path | None, selectors: list[str],
                      out_dir: str | Path, checkpoint: str | None = None, answer: bool = False,
                      records: Sequence[QARecord] | None = None, progress: bool = True) -> dict:
    """`jobs/evaluate.py --benchmark`: the benchmark's records, features for their videos, selection by each
    selector, optionally answers, and the frame_idx export; resumable in out_dir."""
    from dataclasses import asdict

    from tspo_ray.config import ConfigError
    from tspo_ray.data.frame_idx_export import MAX_EXPORTED_FRAMES
    from tspo_ray.encoders import load_encoder
    from tspo_ray.evaluation import select_frames
    from tspo_ray.features import FeatureSpec, FeatureStore, extract_local, load_items, resolve_video

    k = cfg.eval.num_frames
    if k > MAX_EXPORTED_FRAMES:
        raise ConfigError(f"eval.num_frames: the frame_idx export holds at most {MAX_EXPORTED_FRAMES} frames, got {k}")
    if records is None:
        records = load_benchmark_records(name, annotations, videos)
    root = Path(videos) if videos else Path(annotations).parent
    # SEAM: the selector API (KeyframeSelector over all 1-fps candidates) replaces this feature-store selection.
    encoder = load_encoder(cfg.features.encoder)
    spec = FeatureSpec(cfg.features.fps, cfg.features.max_candidates, cfg.features.frame_size, encoder.name)
    store = FeatureStore(cfg.features.store)
    extract_local(list(dict.fromkeys(resolve_video(r, root) for r in records)), encoder, spec, store, progress=progress)
    items, skipped = load_items(records, root, store, spec, encoder)
    by_id = {it.key: it for it in items}
    reasons = {s["id"]: s["reason"] for s in skipped}
    agent = None
    if any(s == "agent" for s in selectors):
        if not checkpoint:
            raise ConfigError("selectors: 'agent' needs --checkpoint")
        from tspo_ray.checkpoint import load_agent

        agent = load_agent(checkpoint, window=cfg.agent.window, heads=cfg.agent.heads).eval()

    def select(record: QARecord, selector: str) -> dict:
        item = by_id.get(record.id)
        if item is None:
            raise ValueError(reasons.get(record.id, "no features"))
        return select_frames(item, selector, k, agent) | {"video": item.video_path}

    answer_fn = None
    settings: dict[str, Any] = {"checkpoint": checkpoint, "encoder": asdict(cfg.features.encoder),
                                "fps": cfg.features.fps, "max_candidates": cfg.features.max_candidates,
                                "frame_size": cfg.features.frame_size}
    if answer:
        from tspo_ray.answerers import build_answerer

        answer_fn = _answer_fn(build_answerer(cfg.answerer.kind, cfg.answerer.settings))
        settings["answerer"] = {"kind": cfg.answerer.kind, "settings": cfg.answerer.settings}
    run = BenchmarkRun(name, Path(annotations), Path(out_dir), list(selectors), k, settings)
    return run_benchmark(run, records, select, answer_fn, progress=progress)
