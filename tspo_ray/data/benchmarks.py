"""Importers: TSPO-10K and the long-video benchmarks' own annotation files -> QARecords.

Every parser follows a real file, named in its docstring (the files TSPO's repository ships under
`evaluation/jsons/` and `evaluation/data/`, and its `toy_example/example1.jsonl` for TSPO-10K). Each record keeps
its benchmark's own question id, the question without options, the options as plain texts and the answer as an
upper-case letter. Breakdown fields go in `meta` under their own names, plus two common keys:
`meta["group"]` (the record's row in the benchmark's breakdown table) and `meta["groups"]` (every row it counts
toward: LVBench questions can carry several question types, and its official table counts them in each).
`meta["family"]` mirrors `group`, which is what the evaluation table breaks down by.

Video paths: `video_root` joined with the benchmark's own video name field; without a root the name stays as
the benchmark writes it.
"""
from __future__ import annotations

import ast
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tspo_ray.data.records import QARecord, RecordError

TSV_COLUMNS = ("index", "task_name", "video_name", "question_id", "question", "answer_number", "candidates", "answer")

# Instruction sentences TSPO-10K appends to some questions; the reference trainer strips exactly these.
_TSPO10K_INSTRUCTIONS = (
    "Please provide your answer by stating the letter followed by the full option.",
    "Please respond with only the letter of the correct answer.",
)
_OPTION_LINE = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.):])\s*(.*?)\s*$")
_LETTERED = re.compile(r"^([A-Z])\.\s+(.*)$", re.DOTALL)  # Video-MME's "A. text"
_SOLUTION = re.compile(r"<answer>\s*([A-Za-z])\s*</answer>")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d{1,2}(?:\.\d+)?)$")


class BenchmarkFormatError(RecordError):
    """A record of a benchmark file that does not follow the benchmark's format; names file, line/id, reason."""


class _Bad(ValueError):
    """A reason a raw record cannot be imported (wrapped with its location by `load`)."""


class ReversedTimeReference(_Bad):
    """A well-formed time reference whose end precedes its start (13 of LVBench's 1,549 questions)."""


# ----------------------------------------------------------------------------------------------- small parsers

def _field(raw: dict, key: str) -> Any:
    if key not in raw:
        raise _Bad(f"missing field {key!r}")
    return raw[key]


def _text(raw: dict, key: str) -> str:
    value = _field(raw, key)
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _string_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{key!r} must be a list of strings, got {value!r}")
    return value


def split_inline_options(text: str) -> tuple[str, list[str]]:
    """(question stem, option texts) from a question that lists its options on lines "A. x" or "(A) x".

    The options must run A, B, C, ... on consecutive lines; blank lines after them are ignored and anything else
    after them is an error (so a stray line never silently becomes part of the last option).
    """
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if _option_letter(line) == "A"), None)
    if first is None:
        raise _Bad(f"no options 'A. ...' or '(A) ...' found in the question {text[:80]!r}")
    options: list[str] = []
    for line in lines[first:]:
        m = _OPTION_LINE.match(line)
        if m and (m.group(1) or m.group(2)) == string.ascii_uppercase[len(options)]:
            options.append(m.group(3))
        elif line.strip():
            raise _Bad(f"unexpected text after option {string.ascii_uppercase[len(options) - 1]}: {line[:80]!r}")
    stem = "\n".join(lines[:first]).strip()
    if not stem:
        raise _Bad("the question has options but no question text")
    return stem, options


def _option_letter(line: str) -> str | None:
    m = _OPTION_LINE.match(line)
    return (m.group(1) or m.group(2)) if m else None


def _strip_letter_prefixes(options: list[str]) -> list[str]:
    """Video-MME writes options as "A. text"; the records keep "text". Letters must run A, B, C, ..."""
    plain = []
    for letter, option in zip(string.ascii_uppercase, options):
        m = _LETTERED.match(option)
        if not m or m.group(1) != letter:
            raise _Bad(f"option {option!r} does not start with '{letter}. '")
        plain.append(m.group(2))
    return plain


def _has_letter_prefixes(options: list[str]) -> bool:
    return all((m := _LETTERED.match(o)) and m.group(1) == letter for letter, o in zip(string.ascii_uppercase, options))


def clock_to_seconds(clock: str) -> float:
    """"MM:SS", "MMM:SS" (LVBench writes 100:23) or "H:MM:SS" -> seconds."""
    m = _CLOCK.match(clock.strip())
    if not m:
        raise _Bad(f"time {clock!r} is not MM:SS or H:MM:SS")
    hours, minutes, seconds = m.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def time_reference_to_spans(reference: str) -> list[list[float]]:
    """LVBench's "MM:SS-MM:SS" -> [[start_s, end_s]]. The real file also has "MM:SS-None" (one moment: a
    zero-length span) and "None-None" (no reference: no span)."""
    parts = [p.strip() for p in str(reference).split("-")]
    if len(parts) != 2:
        raise _Bad(f"time_reference {reference!r} is not START-END")
    start, end = (None if p == "None" else clock_to_seconds(p) for p in parts)
    if start is None and end is None:
        return []
    if start is None or end is None:
        moment = start if start is not None else end
        return [[moment, moment]]
    if end < start:
        raise ReversedTimeReference(f"time_reference {reference!r} ends before it starts")
    return [[start, end]]


def _position_id(where: str) -> str:
    """An id for a record that has none: the file's stem and the record's line (or position) in it."""
    m = re.match(r"^(.*?)(?::(\d+)| \[record (\d+)\])$", where)
    if not m:
        raise _Bad(f"cannot name the record at {where}")
    return f"{Path(m.group(1)).stem}-{m.group(2) or m.group(3)}"


def _letter(index: Any, count: int, key: str) -> str:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise _Bad(f"{key!r} = {index!r} is not an option index in 0..{count - 1}")
    return string.ascii_uppercase[index]


def _video(video_root: str | Path | None, name: str, alternatives: tuple[str, ...] = ()) -> str:
    """video_root / name; when that file is missing, the first alternative name that exists (Video-MME)."""
    if video_root is None:
        return name
    path = Path(video_root) / name
    if not path.exists():
        for alt in alternatives:
            if (Path(video_root) / alt).exists():
                return str(Path(video_root) / alt)
    return str(path)


def _grouped(meta: dict[str, Any], groups: list[str]) -> dict[str, Any]:
    meta.update(group=groups[0], groups=groups, family=groups[0])
    return meta


# ----------------------------------------------------------------------------------------------- file readers

Item = tuple[str, Any]  # (where, raw record or the _Bad that made it unreadable)


def _json_items(path: Path) -> Iterator[Item]:
    """A JSON array of objects (the benchmark files as shipped) or JSON Lines, one object a line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            yield f"{path}:{exc.lineno}", _Bad(f"not valid JSON ({exc.msg})")
            return
        for i, row in enumerate(rows):
            yield f"{path} [record {i}]", row
        return
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}:{lineno}", _Bad(f"not valid JSON ({exc.msg})")


def _lvbench_items(path: Path) -> Iterator[Item]:
    """video_info.meta.jsonl: one line per video, its questions in `qa`; one item per question."""
    for where, video in _json_items(path):
        if not isinstance(video, dict):
            yield where, video if isinstance(video, _Bad) else _Bad("expected a JSON object per line")
            continue
        qa = video.get("qa")
        if not isinstance(qa, list):
            yield where, _Bad("missing or non-list field 'qa'")
            continue
        for j, question in enumerate(qa):
            yield f"{where} qa[{j}]", {"video": video, "qa": question}


def _tsv_items(path: Path) -> Iterator[Item]:
    """VLMEvalKit-style TSV. Split on tabs with no CSV quoting: answers such as `"Microsoft" and the logo`
    (LVBench.tsv, MLVU.tsv) begin with a literal quote that a CSV reader would swallow."""
    lines = path.read_text(encoding="utf-8").split("\n")
    header = tuple(lines[0].rstrip("\r").split("\t")) if lines else ()
    if header != TSV_COLUMNS:
        yield f"{path}:1", _Bad(f"header {list(header)} is not the 8 columns {list(TSV_COLUMNS)}")
        return
    for lineno, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(TSV_COLUMNS):
            yield f"{path}:{lineno}", _Bad(f"{len(cells)} tab-separated columns, expected {len(TSV_COLUMNS)}")
            continue
        yield f"{path}:{lineno}", dict(zip(TSV_COLUMNS, cells))


# ----------------------------------------------------------------------------------------------- record builders
# Each takes one raw item and returns the QARecord fields; _Bad names what is wrong.

def _from_tspo10k(raw: dict, root, where: str) -> dict:
    """TSPO-10K jsonl (as toy_example/example1.jsonl): video, original_question ("<image>\\n" + question + options
    "\\nA. x" or "\\n(A) x"), solution "<answer>x</answer>", type "specific" | "general". The file has no ids:
    a record is named by the file's stem and its line number.

    Needle ("specific") items become needle-in-a-haystack questions only when the haystack is built (their
    target spans are known then), so they are imported as type "general" with meta["tspo_type"] = "specific"
    and meta["needle_source"] = True: a needle record without spans would silently score R_T = 0.
    """
    question = _text(raw, "original_question").replace("<image>\n", "").replace("<image>", "")
    for sentence in _TSPO10K_INSTRUCTIONS:
        question = question.replace(sentence, "")
    stem, options = split_inline_options(question)
    m = _SOLUTION.search(_text(raw, "solution"))
    if not m:
        raise _Bad(f"solution {raw['solution']!r} is not '<answer>x</answer>'")
    tspo_type = str(raw.get("type", "general"))
    rid = raw.get("id") or _position_id(where)
    meta = {"tspo_type": tspo_type, "needle_source": tspo_type == "specific"}
    return dict(id=str(rid), video=_video(root, _text(raw, "video")), question=stem, options=options,
                answer=m.group(1).upper(), type="general", meta=_grouped(meta, [tspo_type]))


def _from_longvideobench(raw: dict, root, where: str) -> dict:
    """lvb_val.json: candidates, correct_choice (0-based), id, duration_group (15/60/600/3600), video_path."""
    options = _string_list(_field(raw, "candidates"), "candidates")
    group = str(_field(raw, "duration_group"))
    meta = {key: raw[key] for key in ("duration_group", "question_category", "level", "topic_category",
                                      "video_id", "question_wo_referring_query") if key in raw}
    return dict(id=str(_field(raw, "id")), video=_video(root, _text(raw, "video_path")),
                question=_text(raw, "question").strip(), options=options,
                answer=_letter(_field(raw, "correct_choice"), len(options), "correct_choice"),
                duration_s=raw.get("duration"), meta=_grouped(meta, [group]))


def _from_mlvu(raw: dict, root, where: str) -> dict:
    """mlvu.json (MLVU dev, the M-Avg tasks): question with inline options "\\n(A) x", candidates, answer letter,
    task_type, question_id, video_name, duration."""
    stem, inline = split_inline_options(_text(raw, "question"))
    options = _string_list(raw.get("candidates", inline), "candidates")
    if [o.strip() for o in inline] != [o.strip() for o in options]:
        raise _Bad(f"the inline options {inline} differ from 'candidates' {options}")
    task = _text(raw, "task_type")
    return dict(id=str(_field(raw, "question_id")), video=_video(root, _text(raw, "video_name")), question=stem,
                options=options, answer=_text(raw, "answer").strip(), duration_s=raw.get("duration"),
                meta=_grouped({"task_type": task}, [task]))


def _from_videomme(raw: dict, root, where: str) -> dict:
    """videomme.json: options "A. x", answer letter, duration short/medium/long, videoID (-> <videoID>.mp4;
    like lmms-eval, .MP4 and .mkv are tried when the .mp4 is missing), question_id. No subtitles."""
    options = _strip_letter_prefixes(_string_list(_field(raw, "options"), "options"))
    bucket = _text(raw, "duration")
    if bucket not in ("short", "medium", "long"):
        raise _Bad(f"duration {bucket!r} is not short, medium or long")
    vid = _text(raw, "videoID")
    meta = {"duration_bucket": bucket, **{k: raw[k] for k in ("domain", "sub_category", "task_type", "video_id")
                                           if k in raw}}
    return dict(id=str(_field(raw, "question_id")),
                video=_video(root, f"{vid}.mp4", (f"{vid}.MP4", f"{vid}.mkv")),
                question=_text(raw, "question").strip(), options=options, answer=_text(raw, "answer").strip(),
                meta=_grouped(meta, [bucket]))


def _from_lvbench(item: dict, root, where: str) -> dict:
    """One question of video_info.meta.jsonl: the video line's key, type, video_info.duration_minutes; the qa
    entry's uid, question with inline "(A) x" options, answer letter, question_type (a list), time_reference.
    The id is key + uid, as LVBench.tsv writes its index (e.g. "Cm73ma6Ibcs55").

    13 questions of the real file have a reversed time reference ("33:52-33:46", but also "63:20-03:35"). The
    question stays (accuracy does not need the span); it gets no span, since neither swapping nor guessing is
    safe, and meta["time_reference_error"] says why.
    """
    video, qa = item["video"], item["qa"]
    if not isinstance(qa, dict):
        raise _Bad("a 'qa' entry is not a JSON object")
    key, uid = _text(video, "key"), _field(qa, "uid")
    types = _string_list(_field(qa, "question_type"), "question_type")
    if not types:
        raise _Bad("'question_type' is empty")
    stem, options = split_inline_options(_text(qa, "question"))
    minutes = (video.get("video_info") or {}).get("duration_minutes")
    meta = {"question_type": types, "video_type": video.get("type"), "time_reference": qa.get("time_reference"),
            "key": key, "uid": str(uid)}
    try:
        spans = time_reference_to_spans(_field(qa, "time_reference"))
    except ReversedTimeReference as reversed_reference:
        spans, meta["time_reference_error"] = [], str(reversed_reference)
    return dict(id=f"{key}{uid}", video=_video(root, f"{key}.mp4"), question=stem, options=options,
                answer=_text(qa, "answer").strip(), target_spans=spans,
                duration_s=None if minutes is None else float(minutes) * 60.0, meta=_grouped(meta, types))


def _tsv_answer(answer: str, number: str, options: list[str]) -> str:
    """The answer letter from a TSV row. LongVideoBench.tsv and VideoMME.tsv give a letter; MLVU.tsv and
    LVBench.tsv give the option text, which can appear twice among the candidates (e.g. ['Six', 'Three',
    'Three', 'Eight']): answer_number (0-based) then says which one."""
    try:
        index = int(number)
    except ValueError:
        raise _Bad(f"answer_number {number!r} is not an integer") from None
    if 0 <= index < len(options) and options[index] == answer:
        return string.ascii_uppercase[index]
    letters = string.ascii_uppercase[: len(options)]
    if len(answer) == 1 and answer in letters:
        if letters.index(answer) != index:
            raise _Bad(f"answer {answer!r} disagrees with answer_number {index}")
        return answer
    hits = [i for i, o in enumerate(options) if o == answer]
    if len(hits) == 1:
        return letters[hits[0]]
    raise _Bad(f"answer {answer!r} is neither an option letter nor exactly one option's text")


def _from_tsv(raw: dict, root, where: str) -> dict:
    """One row of a VLMEvalKit-style TSV (LongVideoBench/MLVU/VideoMME/LVBench.tsv in evaluation/data/)."""
    try:
        options = ast.literal_eval(raw["candidates"])  # a Python list literal; literal_eval never runs code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise _Bad(f"candidates {raw['candidates'][:80]!r} is not a Python list literal") from None
    options = _string_list(options, "candidates")
    if _has_letter_prefixes(options):  # VideoMME.tsv repeats Video-MME's "A. x"
        options = _strip_letter_prefixes(options)
    if not raw["index"].strip():
        raise _Bad("empty index")
    task = raw["task_name"]
    meta = {"task_name": task, "question_id": raw["question_id"], "answer_number": raw["answer_number"]}
    return dict(id=raw["index"], video=_video(root, raw["video_name"]), question=raw["question"].strip(),
                options=options, answer=_tsv_answer(raw["answer"], raw["answer_number"], options),
                meta=_grouped(meta, [task]))


# ----------------------------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Format:
    description: str
    items: Callable[[Path], Iterator[Item]]
    build: Callable[[Any, Any, str], dict]


FORMATS: dict[str, Format] = {
    "tspo10k": Format("TSPO-10K training jsonl (video, original_question with options, solution, type)",
                      _json_items, _from_tspo10k),
    "longvideobench": Format("LongVideoBench lvb_val.json (breakdown: duration_group)", _json_items,
                             _from_longvideobench),
    "mlvu": Format("MLVU dev mlvu.json, the M-Avg multiple-choice tasks (breakdown: task_type)", _json_items,
                   _from_mlvu),
    "videomme": Format("Video-MME videomme.json without subtitles (breakdown: duration short/medium/long)",
                       _json_items, _from_videomme),
    "lvbench": Format("LVBench video_info.meta.jsonl, one line per video (breakdown: question_type; "
                      "time_reference -> target_spans in seconds)", _lvbench_items, _from_lvbench),
    "tsv": Format("VLMEvalKit-style 8-column TSV: index task_name video_name question_id question "
                  "answer_number candidates answer (breakdown: task_name)", _tsv_items, _from_tsv),
}


def list_formats() -> dict[str, str]:
    """Format name -> one-line description."""
    return {name: fmt.description for name, fmt in FORMATS.items()}


def load(name: str, annotations: str | Path, video_root: str | Path | None = None,
         errors: list[dict[str, str]] | None = None) -> list[QARecord]:
    """Read a benchmark's annotation file as QARecords.

    A malformed record raises BenchmarkFormatError naming the file, the line or record number, the id when it
    has one, and the reason. Pass a list as `errors` to skip bad records instead: each is appended there as
    {"where", "reason"}.
    """
    if name not in FORMATS:
        raise ValueError(f"unknown benchmark format {name!r}; known: {sorted(FORMATS)}")
    path = Path(annotations)
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: annotation file not found")
    fmt = FORMATS[name]
    records: list[QARecord] = []
    for where, raw in fmt.items(path):
        try:
            if isinstance(raw, _Bad):
                raise BenchmarkFormatError(f"{where}: {raw}")
            if not isinstance(raw, dict):
                raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(raw).__name__}")
            try:
                records.append(QARecord.from_dict(fmt.build(raw, video_root, where), where))
            except _Bad as bad:
                raise BenchmarkFormatError(f"{where}{_id_note(raw)}: {bad}") from None
        except RecordError as err:
            if errors is None:
                raise
            errors.append({"where": where, "reason": str(err)})
    return records


def _id_note(raw: dict) -> str:
    if "qa" in raw and isinstance(raw.get("video"), dict):  # an LVBench question
        qa = raw["qa"] if isinstance(raw["qa"], dict) else {}
        return f" (id={raw['video'].get('key', '?')}{qa.get('uid', '?')})"
    for key in ("index", "id", "question_id"):
        if key in raw:
            return f" (id={raw[key]!r})"
    return ""
