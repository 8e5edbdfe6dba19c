"""Malformed QA records: every kind gets `file:line: reason` (never a traceback), with the jobs' stop/skip rules."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers.scripts import load_script

from tspo_ray.data.records import MAX_QUESTION_CHARS, QARecord, RecordError, read_records

GOOD = {"id": "q1", "video": "videos/a.mp4", "question": "What happens first?", "options": ["x", "y", "z", "w"],
        "answer": "B"}
NEEDLE = {**GOOD, "type": "needle", "target_spans": [[1.0, 2.0]], "duration_s": 10.0}


def line(record: dict) -> bytes:
    return json.dumps(record).encode()


# (kind, the bad line(s), the line number reported, a phrase of the reason)
BAD_LINES = [
    ("not JSON", b"{not json", 1, "not valid JSON"),
    ("not an object", b"[1, 2]", 1, "expected a JSON object, got list"),
    ("missing id", line({k: v for k, v in GOOD.items() if k != "id"}), 1, "missing field 'id'"),
    ("missing video", line({k: v for k, v in GOOD.items() if k != "video"}), 1, "missing field 'video'"),
    ("missing question", line({k: v for k, v in GOOD.items() if k != "question"}), 1, "missing field 'question'"),
    ("missing options", line({k: v for k, v in GOOD.items() if k != "options"}), 1, "missing field 'options'"),
    ("missing answer", line({k: v for k, v in GOOD.items() if k != "answer"}), 1, "missing field 'answer'"),
    ("null id", line({**GOOD, "id": None}), 1, "'id' must be a string or an integer, got null"),
    ("duplicate id", line(GOOD) + b"\n" + line({**GOOD, "video": "videos/b.mp4"}), 2,
     "duplicate id 'q1' (first on line 2)"),
    ("non-string question", line({**GOOD, "question": 42}), 1, "'question' must be a string, got int"),
    ("empty question", line({**GOOD, "question": "  "}), 1, "'question' is empty"),
    ("question over the limit", line({**GOOD, "question": "x" * 1_000_000}), 1,
     f"more than the limit of {MAX_QUESTION_CHARS}"),
    ("options not a list", line({**GOOD, "options": "abcd"}), 1, "'options' must be a list of strings, got str"),
    ("options wrong length", line({**GOOD, "options": ["only"]}), 1, "'options' must have 2..26 entries, got 1"),
    ("options not strings", line({**GOOD, "options": ["a", 2]}), 1, "'options'[1] must be a string, got int"),
    ("answer not a letter", line({**GOOD, "answer": "Q"}), 1, "'answer' \"Q\" is not one of ['A', 'B', 'C', 'D']"),
    ("answer not a string", line({**GOOD, "answer": 1}), 1, "'answer' 1 is not one of"),
    ("unknown type", line({**GOOD, "type": "tricky"}), 1, "'type' \"tricky\" is not one of"),
    ("spans malformed", line({**NEEDLE, "target_spans": [[1.0]]}), 1, "'target_spans'[0] must be a [start_s, end_s]"),
    ("spans not a list", line({**NEEDLE, "target_spans": "0-5"}), 1, "'target_spans' must be a list"),
    ("negative span", line({**NEEDLE, "target_spans": [[-5.0, 2.0]]}), 1, "starts before 0 s"),
    ("NaN span", line(NEEDLE).replace(b"[[1.0, 2.0]]", b"[[NaN, 2.0]]"), 1, "NaN is not valid JSON"),
    ("infinite span", line(NEEDLE).replace(b"[[1.0, 2.0]]", b"[[1.0, 1e999]]"), 1, "is not finite"),
    ("span past duration", line({**NEEDLE, "target_spans": [[8.0, 50.0]]}), 1, "ends after the video's duration_s"),
    ("end before start", line({**NEEDLE, "target_spans": [[5.0, 2.0]]}), 1, "ends before it starts"),
    ("duration not a number", line({**GOOD, "duration_s": "abc"}), 1, "'duration_s' must be a positive finite"),
    ("negative duration", line({**GOOD, "duration_s": -3}), 1, "'duration_s' must be a positive finite"),
    ("NaN duration", line(GOOD)[:-1] + b', "duration_s": NaN}', 1, "NaN is not valid JSON"),
    ("meta not an object", line({**GOOD, "meta": [1, 2]}), 1, "'meta' must be a JSON object, got list"),
    ("Latin-1 line", line({**GOOD, "question": "caf"})[:-2] + "é\"}".encode("latin-1"), 1, "not UTF-8 text"),
    ("huge integer", line(GOOD)[:-1] + b', "duration_s": ' + b"9" * 5000 + b"}", 1, "not valid JSON"),
    ("video with ..", line({**GOOD, "video": "../../../../etc/passwd"}), 1, "climbs out of the data root"),
    ("video absolute outside", line({**GOOD, "video": "/etc/passwd"}), 1, "is an absolute path outside the data root"),
    ("video empty", line({**GOOD, "video": ""}), 1, "'video' must be a non-empty path string"),
]


@pytest.mark.parametrize("kind,data,lineno,reason", BAD_LINES, ids=[k for k, *_ in BAD_LINES])
def test_each_malformed_kind_is_named_by_file_line_and_reason(tmp_path, kind, data, lineno, reason):
    path = tmp_path / "split.jsonl"
    path.write_bytes(line({**GOOD, "id": "ok"}) + b"\n" + data + b"\n")
    records, errors = read_records(path, strict=False)
    assert [r.id for r in records] in (["ok"], ["ok", "q1"])  # the good line (and a duplicate's first) survive
    assert len(errors) == 1, errors
    assert errors[0]["where"] == f"{path}:{lineno + 1}"
    assert errors[0]["reason"].startswith(f"{path}:{lineno + 1}: ") and reason in errors[0]["reason"], errors[0]
    with pytest.raises(RecordError, match="1 malformed record in"):
        read_records(path)


def test_strict_reading_lists_every_bad_line(tmp_path):
    path = tmp_path / "split.jsonl"
    path.write_bytes(b"\n".join([line(GOOD), b"[]", line({**GOOD, "id": "q2", "meta": 3}), b"{", b""]))
    with pytest.raises(RecordError) as err:
        read_records(path)
    text = str(err.value)
    assert text.startswith(f"3 malformed records in {path}:")
    assert f"{path}:2: expected a JSON object" in text and f"{path}:3: id 'q2': 'meta'" in text
    assert f"{path}:4: not valid JSON" in text


def test_valid_records_pass_and_keep_their_values(tmp_path):
    path = tmp_path / "split.jsonl"
    path.write_bytes(line(GOOD) + b"\n" + line({**NEEDLE, "id": 7, "target_spans": [[0, 10]], "meta": {"f": 1}}))
    (a, b), errors = read_records(path)
    assert errors == [] and a.answer == "B" and a.duration_s is None
    assert b.id == "7" and b.target_spans == [[0.0, 10.0]] and b.duration_s == 10.0 and b.meta == {"f": 1}
    assert QARecord.from_dict({**GOOD, "answer": " c "}).answer == "C"


def test_video_symlink_leading_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "videos").mkdir(parents=True), outside.mkdir()
    (outside / "v.mp4").write_bytes(b"x")
    (root / "videos" / "link.mp4").symlink_to(outside / "v.mp4")
    (root / "videos" / "dir").symlink_to(outside, target_is_directory=True)
    (root / "videos" / "loop.mp4").symlink_to(root / "videos" / "loop.mp4")
    rows = [{**GOOD, "id": "a", "video": "videos/link.mp4"}, {**GOOD, "id": "b", "video": "videos/dir/v.mp4"},
            {**GOOD, "id": "c", "video": str(root / "videos" / "inside.mp4")},
            {**GOOD, "id": "d", "video": "videos/loop.mp4"}]
    path = root / "split.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    records, errors = read_records(path, strict=False)
    assert [r.id for r in records] == ["c"]  # an absolute path inside the root is fine
    assert ["symlink outside the data root" in e["reason"] for e in errors] == [True, True, False]
    assert "cannot be resolved" in errors[2]["reason"] and f"{path}:4: " in errors[2]["reason"]
    allowed, errors = read_records(path, strict=False, allow_outside_root=True)
    assert errors == [] and len(allowed) == 4


def test_on_bad_record_is_validated():
    from tspo_ray.config import ConfigError, load_config

    assert load_config().data.on_bad_record == "stop" and load_config().data.allow_outside_root is False
    assert load_config(overrides=["data.on_bad_record=skip"]).data.on_bad_record == "skip"
    with pytest.raises(ConfigError, match="data.on_bad_record: must be one of stop, skip, got 'ignore'"):
        load_config(overrides=["data.on_bad_record=ignore"])


def _world_copy(tiny_world: Path, tmp_path: Path, extra_lines: list[str]) -> Path:
    """A copy of the tiny world's test split and videos with bad lines appended."""
    root = tmp_path / "world"
    shutil.copytree(tiny_world / "videos", root / "videos")
    text = (tiny_world / "test.jsonl").read_text()
    (root / "test.jsonl").write_text(text + "".join(x + "\n" for x in extra_lines))
    return root


def test_evaluation_lists_skipped_questions_and_refuses_splits_outside_the_root(tiny_world, tmp_path):
    from tspo_ray.config import ConfigError, load_config
    from tspo_ray.evaluation.split_job import run_evaluation
    from tspo_ray.splits import NoUsableQuestions

    root = _world_copy(tiny_world, tmp_path, [json.dumps({**GOOD, "id": "bad", "meta": [1]})])
    base = [f"data.root={root}", f"features.store={tmp_path}/fs", "features.max_candidates=16"]
    with pytest.raises(RecordError, match=r"test.jsonl:\d+: id 'bad': 'meta' must be a JSON object"):
        run_evaluation(load_config(overrides=base), "test", ["uniform"], tmp_path / "e0", progress=False)
    out = run_evaluation(load_config(overrides=base + ["data.on_bad_record=skip"]), "test", ["uniform"],
                         tmp_path / "e1", progress=False)
    table = (tmp_path / "e1" / "table.md").read_text()
    assert out["results"]["uniform"]["questions"] >= 1 and "Skipped 1 question" in table and "'meta' must be" in table

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "test.jsonl").write_text((tiny_world / "test.jsonl").read_text())
    cfg = load_config(overrides=[f"data.root={root}", f"data.test={elsewhere / 'test.jsonl'}"])
    with pytest.raises(ConfigError, match="is outside data.root"):
        run_evaluation(cfg, "test", ["uniform"], tmp_path / "e2", progress=False)

    gone = _world_copy(tiny_world, tmp_path / "gone", [])
    shutil.rmtree(gone / "videos")  # every video missing: nothing usable
    cfg = load_config(overrides=[f"data.root={gone}", f"features.store={tmp_path}/fs2", "features.max_candidates=16"])
    with pytest.raises(NoUsableQuestions, match="no usable questions in the test split"):
        run_evaluation(cfg, "test", ["uniform"], tmp_path / "e3", progress=False)


def test_evaluate_job_exits_non_zero_without_usable_questions(tmp_path, monkeypatch):
    evaluate = load_script("jobs/evaluate.py")

    root = tmp_path / "data"
    root.mkdir()
    (root / "test.jsonl").write_text(json.dumps({**GOOD, "video": "missing.mp4"}) + "\n")
    monkeypatch.setattr(sys, "argv", ["evaluate.py", f"data.root={root}", f"features.store={tmp_path}/fs",
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        evaluate.main()
    message = str(exit_.value.code)  # sys.exit(text): printed to stderr, exit status 1
    assert message.startswith("error: no usable questions in the test split") and "q1: " in message
    assert "missing.mp4" in message


def test_train_job_stops_on_bad_records_and_lists_them_all(tiny_world, tmp_path, capsys):
    main = load_script("jobs/train.py").main

    root = tmp_path / "world"
    root.mkdir()
    good = (tiny_world / "train.jsonl").read_text()
    (root / "train.jsonl").write_text(good + "{oops\n" + json.dumps({**GOOD, "id": "x", "duration_s": "abc"}) + "\n")
    n = len(good.splitlines())
    code = main(["--local", f"data.root={root}", f"features.store={tmp_path}/fs", "tracking.enabled=false",
                 f"train.output_dir={tmp_path}/run"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"2 malformed records in {root / 'train.jsonl'}" in err
    assert f"train.jsonl:{n + 1}: not valid JSON" in err and f"train.jsonl:{n + 2}: id 'x': 'duration_s'" in err
    assert "data.on_bad_record=skip" in err
