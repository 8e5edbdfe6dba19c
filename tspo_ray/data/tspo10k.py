"""Writing QA records as TSPO-10K training jsonl, the format the reference trains from (toy_example/example1.jsonl).

One line per question: `video` relative to the video folder, `original_question` = "<image>\\n" + question + one
"\\nA. option" line per option, `problem` = "<image>\\n" + question, `solution` = "<answer>x</answer>" (lower-case
letter), `original_answer` and `complete_answer` = "X. option", `type` "specific" (needle: trained inside a haystack)
or "general"; plus `id`, which the reference ignores and tspo_ray.data.benchmarks.load("tspo10k", ...) keeps.
Every line is checked to read back to the same question, options and answer before anything is written.
"""
from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Iterable, Sequence

from tspo_ray.data.benchmarks import _SOLUTION, _Bad, split_inline_options
from tspo_ray.data.records import QARecord
from tspo_ray.safe_files import write_jsonl_atomic


class TSPO10KWriteError(ValueError):
    """A record that cannot be written as TSPO-10K; the message names the record and the reason."""


def tspo_type(record: QARecord, specific_families: Sequence[str] = ()) -> str:
    """The record's TSPO-10K type: its own (an imported TSPO-10K item), else "specific" for a needle family."""
    own = record.meta.get("tspo_type")
    if isinstance(own, str) and own:
        return own
    return "specific" if record.family in specific_families else "general"


def relative_video(video_path: str | Path, video_root: str | Path) -> str:
    """The video's path relative to the video folder; a video outside it cannot be named that way."""
    real, root = Path(os.path.abspath(video_path)), Path(os.path.abspath(video_root))
    if root not in real.parents:
        raise TSPO10KWriteError(f"{video_path} is not inside the video folder {video_root}")
    return real.relative_to(root).as_posix()


def to_tspo10k(record: QARecord, video_path: str | Path, video_root: str | Path,
               specific_families: Sequence[str] = ()) -> dict:
    """One TSPO-10K line for a record whose video file is video_path."""
    letters = string.ascii_uppercase
    question = record.question.strip()
    stated = [f"{letters[i]}. {option.strip()}" for i, option in enumerate(record.options)]
    right = stated[letters.index(record.answer)]
    row = {"id": record.id, "video": relative_video(video_path, video_root),
           "original_question": "<image>\n" + question + "".join(f"\n{line}" for line in stated),
           "problem": "<image>\n" + question, "solution": f"<answer>{record.answer.lower()}</answer>",
           "original_answer": right, "complete_answer": right, "type": tspo_type(record, specific_families)}
    _check_round_trip(record, row)
    return row


def _check_round_trip(record: QARecord, row: dict) -> None:
    """The line must read back (as the importer reads it) to the record's question, options and answer: a newline in
    an option, or a question line that looks like an option, would otherwise change the question silently."""
    try:
        stem, options = split_inline_options(row["original_question"].replace("<image>\n", ""))
    except _Bad as bad:
        raise TSPO10KWriteError(f"record {record.id}: {bad}") from None
    m = _SOLUTION.search(row["solution"])
    if (stem, options, m.group(1).upper() if m else None) != (record.question.strip(),
                                                              [o.strip() for o in record.options], record.answer):
        raise TSPO10KWriteError(f"record {record.id}: its question or options do not survive the TSPO-10K layout "
                                "(a newline inside an option, or a question line that reads as an option)")


def write_tspo10k(path: str | Path, rows: Iterable[dict]) -> int:
    """Write TSPO-10K lines atomically (a reader never sees half a file); returns the number written."""
    rows = list(rows)
    write_jsonl_atomic(path, rows)
    return len(rows)
