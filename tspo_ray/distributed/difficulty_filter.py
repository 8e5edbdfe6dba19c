"""The difficulty filter on Ray: Ray Data reads each video's candidates once (in parallel) and plans every question's
two uniform frame sets; the answerer actor pool answers them batch by batch; the decision rule of
tspo_ray.data.difficulty sorts each question into kept / too_easy / too_hard / failed; the kept ones are written
as TSPO-10K jsonl (tspo_ray.data.tspo10k), atomically.

Only paths, indices and option letters travel; answerers decode the frames where they run. A video that cannot be
read, or a batch an answerer fails on, costs only its own questions (reason "failed", with the error).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.data import difficulty
from tspo_ray.data.records import QARecord
from tspo_ray.data.tspo10k import TSPO10KWriteError, to_tspo10k, write_tspo10k
from tspo_ray.method.rewards import answer_reward
from tspo_ray.safe_files import write_jsonl_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilterSettings:
    #: frames of the "too easy" test: answerable from this many uniform candidates -> dropped
    easy_frames: int = 4
    #: frames of the "too hard" test: unanswerable from this many uniform candidates -> dropped
    hard_frames: int = 64
    #: the candidate grid the frames are spread over (features.fps / max_candidates / min_candidates)
    fps: float = 1.0
    max_candidates: int | None = 128
    min_candidates: int | None = None
    #: questions per answer call (two requests each)
    batch_size: int = 16
    #: CPUs per Ray Data planning task
    plan_cpus: float = 0.5

    def __post_init__(self):
        if not 1 <= self.easy_frames < self.hard_frames:
            raise ValueError(f"need 1 <= easy_frames < hard_frames, got {self.easy_frames} and {self.hard_frames}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class FilterResult:
    counts: dict[str, int]
    #: one per question, in input order: id, video (as the QA file has it), reason, the easy and hard answers, error
    decisions: list[dict] = field(default_factory=list)
    #: the kept questions as TSPO-10K lines, in input order
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def requests_for(record: QARecord, video_path: str, sets: dict[str, tuple[list[int], list[float]]]
                 ) -> list[AnswerRequest]:
    """The two AnswerRequests of a question (keys `<id>#easy`, `<id>#hard`): what a model would see, no answer."""
    return [AnswerRequest.for_record(record, video_path, *sets[name], tag=name) for name in ("easy", "hard")]


def correct(record: QARecord, answer: Answer) -> bool | None:
    """R_A of an answer as a bool; None when the answerer reported an error for the request."""
    if "error" in answer.extra:
        return None
    return bool(answer_reward(answer.option, record.answer))


def plan_video(row: dict, settings: FilterSettings) -> list[dict]:
    """Ray Data flat_map: one video's candidates -> each of its questions' easy and hard frame sets (or why not)."""
    from tspo_ray.video import frames as video

    try:
        cands = video.candidates(row["path"], settings.fps, settings.max_candidates, settings.min_candidates)
        sets, error = difficulty.uniform_sets(cands.frame_indices, cands.timestamps_s, settings.easy_frames,
                                              settings.hard_frames), ""
    except (video.VideoError, OSError) as exc:
        sets, error = {"easy": ([], []), "hard": ([], [])}, str(exc)
    return [{"pos": int(p), "easy_idx": sets["easy"][0], "easy_ts": sets["easy"][1], "hard_idx": sets["hard"][0],
             "hard_ts": sets["hard"][1], "error": error} for p in row["positions"]]


def _planned(paths: Sequence[str], todo: Sequence[int], settings: FilterSettings):
    """Ray Data over the distinct videos of the questions `todo`; yields one planned row per question."""
    import ray

    by_video: dict[str, list[int]] = {}
    for pos in todo:
        by_video.setdefault(paths[pos], []).append(pos)
    rows = [{"path": path, "positions": positions} for path, positions in by_video.items()]
    if not rows:
        return iter(())
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64)).flat_map(
        plan_video, fn_kwargs={"settings": settings}, num_cpus=settings.plan_cpus)
    return ds.iter_rows()


def _answer(pool, batch: list[tuple[QARecord, list]]) -> dict[str, object]:
    """Answers by request key for a batch of questions; when the batch fails, question by question, so a failure
    costs only its own question (its key maps to the error text)."""
    requests = [r for _, reqs in batch for r in reqs]
    try:
        return {r.key: a for r, a in zip(requests, pool.answer(requests))}
    except Exception as exc:  # an answerer raised on some request of the batch: find which
        if len(batch) == 1:
            return {r.key: f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}" for r in requests}
        out: dict[str, object] = {}
        for one in batch:
            out.update(_answer(pool, [one]))
        return out


def _failed(record: QARecord, error: str) -> dict:
    return {"id": record.id, "video": record.video, "reason": "failed", "easy": None, "hard": None, "error": error}


def _decision(record: QARecord, reqs: list, answers: dict[str, object]) -> dict:
    """A question's row of the decisions file from its two answers (an Answer, or the error text of its batch)."""
    got = [answers[r.key] for r in reqs]
    failed = lambda a: isinstance(a, str) or "error" in a.extra  # noqa: E731
    judged = [None if isinstance(a, str) else correct(record, a) for a in got]
    return {"id": record.id, "video": record.video, "reason": difficulty.decide(*judged),
            "easy": None if isinstance(got[0], str) else got[0].option,
            "hard": None if isinstance(got[1], str) else got[1].option,
            "error": "; ".join(a if isinstance(a, str) else a.extra["error"] for a in got if failed(a))}


def filter_records(records: Sequence[QARecord], paths: Sequence[str], pool, video_root: str | Path,
                   settings: FilterSettings = FilterSettings(), specific_families: Sequence[str] = (),
                   progress: bool = True) -> FilterResult:
    """Sort every question (records[i] on the video file paths[i]) with the answerer actor pool."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    decisions: list[dict | None] = [None] * len(records)
    lines: dict[int, dict] = {}
    for pos, (rec, path) in enumerate(zip(records, paths)):
        try:
            lines[pos] = to_tspo10k(rec, path, video_root, specific_families)
        except TSPO10KWriteError as exc:  # not writable: not worth answering
            decisions[pos] = _failed(rec, str(exc))
    bar = tqdm(total=len(records), desc="difficulty", unit="question", disable=not progress)
    bar.update(len(records) - len(lines))
    batch: list[tuple[int, list]] = []

    def flush() -> None:
        answers = _answer(pool, [(records[p], reqs) for p, reqs in batch])
        for p, reqs in batch:
            decisions[p] = _decision(records[p], reqs, answers)
        bar.update(len(batch))
        bar.set_postfix(difficulty.counts(d["reason"] for d in decisions if d is not None))
        batch.clear()

    for row in _planned(paths, sorted(lines), settings):
        p = int(row["pos"])
        if row["error"]:
            decisions[p] = _failed(records[p], row["error"])
            bar.update()
            continue
        sets = {name: ([int(i) for i in row[f"{name}_idx"]], [float(t) for t in row[f"{name}_ts"]])
                for name in ("easy", "hard")}
        batch.append((p, requests_for(records[p], paths[p], sets)))
        if len(batch) >= settings.batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    kept = [lines[p] for p, d in enumerate(decisions) if d["reason"] == "kept"]
    return FilterResult(difficulty.counts(d["reason"] for d in decisions), decisions, kept,
                        time.perf_counter() - t0)


def write_result(result: FilterResult, out: str | Path, decisions_out: str | Path | None = None) -> None:
    """The kept questions as TSPO-10K jsonl at `out`, and every question's decision at decisions_out; atomically."""
    write_tspo10k(out, result.rows)
    if decisions_out is not None:
        write_jsonl_atomic(decisions_out, result.decisions)
