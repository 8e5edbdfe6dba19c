"""TSPO-10K's difficulty filter: the decision rule and the frame sets by hand, the TSPO-10K writer against the
importer, and the filter end to end on a tiny world (real videos, embedded answerer, answerer actor pool, Ray Data
on a real local Ray), checked against answers computed independently in this process."""
import json

import pytest
from helpers.scripts import load_script

from tspo_ray.data import difficulty
from tspo_ray.data.benchmarks import load
from tspo_ray.data.records import QARecord, read_records
from tspo_ray.data.tspo10k import TSPO10KWriteError, to_tspo10k, tspo_type, write_tspo10k
from tspo_ray.distributed.difficulty_filter import requests_for


def test_decision_rule_by_hand():
    assert difficulty.decide(True, True) == "too_easy"
    assert difficulty.decide(True, False) == "too_easy"  # the few frames already answer it
    assert difficulty.decide(False, False) == "too_hard"
    assert difficulty.decide(False, True) == "kept"
    assert difficulty.decide(None, True) == difficulty.decide(False, None) == "failed"
    assert difficulty.counts(["kept", "too_easy", "kept", "failed"]) == {
        "kept": 2, "too_easy": 1, "too_hard": 0, "failed": 1, "total": 4}
    with pytest.raises(ValueError, match="unknown reasons"):
        difficulty.counts(["kept", "meh"])


def test_uniform_sets_by_hand():
    idx, ts = [0, 30, 60, 90, 120, 150, 180, 210, 240, 270], [float(t) for t in range(10)]
    sets = difficulty.uniform_sets(idx, ts, 4, 64)
    assert sets["easy"] == ([30, 90, 180, 240], [1.0, 3.0, 6.0, 8.0])  # centres of 4 bins of 10: 1.25 3.75 6.25 8.75
    assert sets["hard"] == (idx, ts)  # fewer candidates than 64: all of them
    rec = QARecord("q1", "v.mp4", "What colour is the star?", ["red", "blue"], "B")
    easy, hard = requests_for(rec, "/data/v.mp4", sets)
    assert (easy.key, hard.key) == ("q1#easy", "q1#hard")
    assert easy.frame_indices == (30, 90, 180, 240) and easy.video == "/data/v.mp4" and hard.options == ("red", "blue")


def test_tspo10k_line_by_hand(tmp_path):
    rec = QARecord("train-0001-q03", "videos/a.mp4", "What shape is the red object?", ["star", "circle", "cross"], "C",
                   meta={"family": "needle_attribute"})
    row = to_tspo10k(rec, tmp_path / "videos" / "a.mp4", tmp_path, ("needle_attribute",))
    assert row == {
        "id": "train-0001-q03", "video": "videos/a.mp4",
        "original_question": "<image>\nWhat shape is the red object?\nA. star\nB. circle\nC. cross",
        "problem": "<image>\nWhat shape is the red object?", "solution": "<answer>c</answer>",
        "original_answer": "C. cross", "complete_answer": "C. cross", "type": "specific"}
    assert to_tspo10k(rec, tmp_path / "videos" / "a.mp4", tmp_path)["type"] == "general"
    imported = QARecord("t-1", "v.mp4", "Q?", ["a", "b"], "A", meta={"tspo_type": "specific", "family": "specific"})
    assert tspo_type(imported) == "specific"  # an imported TSPO-10K item keeps its own type
    with pytest.raises(TSPO10KWriteError, match="not inside the video folder"):
        to_tspo10k(rec, "/elsewhere/a.mp4", tmp_path)
    bad = QARecord("q-nl", "videos/a.mp4", "Which?", ["one\nB. two", "three"], "A")
    with pytest.raises(TSPO10KWriteError, match="q-nl"):
        to_tspo10k(bad, tmp_path / "videos" / "a.mp4", tmp_path)
    looks_like_options = QARecord("q-opt", "videos/a.mp4", "Pick one:\nA. this", ["x", "y"], "B")
    with pytest.raises(TSPO10KWriteError, match="q-opt"):
        to_tspo10k(looks_like_options, tmp_path / "videos" / "a.mp4", tmp_path)


def test_written_tspo10k_loads_back_through_the_importer(tiny_world, tmp_path):
    records, _ = read_records(tiny_world / "train.jsonl")
    rows = [to_tspo10k(r, tiny_world / r.video, tiny_world, ("needle_attribute",)) for r in records]
    out = tmp_path / "tspo10k.jsonl"
    assert write_tspo10k(out, rows) == len(records)
    back = load("tspo10k", out, video_root=tiny_world)
    assert [(b.id, b.question, b.options, b.answer) for b in back] == \
        [(r.id, r.question, r.options, r.answer) for r in records]
    assert [b.video for b in back] == [str(tiny_world / r.video) for r in records]
    assert [b.meta["tspo_type"] for b in back] == ["specific" if r.family == "needle_attribute" else "general"
                                                   for r in records]
    assert all(json.loads(line)["solution"].islower() for line in out.read_text().splitlines())


# --- end to end on a real local Ray ----------------------------------------------------------------------------

def independent_reasons(records, world):
    """The decisions recomputed in this process: the frame sets of frame_sets.frame_set (uniform), one answerer."""
    from tspo_ray.answerers.embedded import EmbeddedAnswerer
    from tspo_ray.answerers.frame_sets import request_for

    answerer = EmbeddedAnswerer()
    reasons = {}
    for r in records:
        easy, hard = answerer.answer([request_for(r, world / r.video, "uniform", k) for k in (4, 64)])
        reasons[r.id] = difficulty.decide(easy.option == r.answer, hard.option == r.answer)
    return reasons


@pytest.fixture(scope="module")
def filtered(tiny_world, ray_local, tmp_path_factory):
    """The filter over the tiny world's train split plus one question on a broken video, and its files."""
    import shutil

    from tspo_ray.answerers import AnswererFactory
    from tspo_ray.answerers.pool import AnswererActorPool
    from tspo_ray.distributed.difficulty_filter import FilterSettings, filter_records, write_result

    world = tmp_path_factory.mktemp("filter_world")
    shutil.copytree(tiny_world / "videos", world / "videos")
    records, _ = read_records(tiny_world / "train.jsonl")
    (world / "videos" / "broken.mp4").write_bytes(b"not a video")
    broken = QARecord("broken-q", "videos/broken.mp4", "What colour is the star?", ["red", "blue"], "A")
    records = records[:6] + [broken] + records[6:]
    pool = AnswererActorPool(AnswererFactory("embedded"), num_actors=2, actor_options={"num_cpus": 0.5})
    try:
        result = filter_records(records, [str(world / r.video) for r in records], pool, world,
                                FilterSettings(batch_size=5), ("needle_attribute",), progress=False)
    finally:
        pool.shutdown()
    out = world / "tspo10k_train.jsonl"
    write_result(result, out, world / "decisions.jsonl")
    return world, records, result, out


def test_filter_sorts_every_question_as_an_independent_recomputation(filtered):
    world, records, result, _ = filtered
    reasons = {d["id"]: d["reason"] for d in result.decisions}
    assert [d["id"] for d in result.decisions] == [r.id for r in records]
    assert reasons.pop("broken-q") == "failed"
    assert "broken.mp4" in result.decisions[6]["error"]
    assert reasons == independent_reasons([r for r in records if r.id != "broken-q"], world)
    c = result.counts
    assert c["total"] == len(records) and c["failed"] == 1
    assert c["kept"] == sum(v == "kept" for v in reasons.values()) and c["kept"] > 0
    assert c["too_easy"] + c["too_hard"] > 0  # the world has both kinds: the filter drops something


def test_kept_questions_load_back_as_tspo10k(filtered):
    world, records, result, out = filtered
    kept_ids = [d["id"] for d in result.decisions if d["reason"] == "kept"]
    by_id = {r.id: r for r in records}
    back = load("tspo10k", out, video_root=world)
    assert [b.id for b in back] == kept_ids
    for b in back:
        r = by_id[b.id]
        assert (b.question, b.options, b.answer, b.video) == (r.question, r.options, r.answer, str(world / r.video))
    decisions = [json.loads(line) for line in (world / "decisions.jsonl").read_text().splitlines()]
    assert decisions == result.decisions


def test_the_pipeline_end_to_end(tiny_world, filtered, tmp_path, capsys):
    """The command line over the same questions gives the same decisions as the filter run above (deterministic)."""
    main = load_script("pipelines/difficulty_filter.py").main

    out = tmp_path / "kept.jsonl"
    assert main(["--out", str(out), "--limit", "12", "--no-progress", f"data.root={tiny_world}",
                 "train.answerer_cpus=0.5"]) == 0
    printed = capsys.readouterr().out
    decisions = [json.loads(line) for line in out.with_suffix(".decisions.jsonl").read_text().splitlines()]
    records, _ = read_records(tiny_world / "train.jsonl")
    first = {r.id for r in records[:12]}
    want = {d["id"]: d["reason"] for d in filtered[2].decisions if d["id"] in first}
    assert {d["id"]: d["reason"] for d in decisions} == want and len(want) == 12
    kept = sum(v == "kept" for v in want.values())
    assert f"12 questions: kept {kept}," in printed
    assert len(load("tspo10k", out, video_root=tiny_world)) == kept
    assert main(["--easy-frames", "8", "--hard-frames", "4", f"data.root={tiny_world}"]) == 2
    assert "easy_frames < hard_frames" in capsys.readouterr().err


def test_a_tspo10k_file_is_a_training_split(tiny_world):
    from pathlib import Path

    from tspo_ray.config import ConfigError, load_config
    from tspo_ray.data.records import RecordError
    from tspo_ray.splits import split_records

    records, _ = read_records(tiny_world / "train.jsonl")
    rows = [to_tspo10k(r, tiny_world / r.video, tiny_world, ("needle_attribute",)) for r in records]
    write_tspo10k(tiny_world / "tspo10k_as_train.jsonl", rows)
    config = Path(__file__).resolve().parents[1] / "configs" / "embedded.yaml"
    over = [f"data.root={tiny_world}", "data.train_format=tspo10k"]
    got, problems = split_records(load_config(config, [*over, "data.train=tspo10k_as_train.jsonl"]), "train")
    assert problems == [] and [(g.id, g.question, g.answer) for g in got] == [(r.id, r.question, r.answer)
                                                                             for r in records]
    assert [g.meta["needle_source"] for g in got] == [r.family == "needle_attribute" for r in records]
    # a malformed line and a video outside the root are each named; "skip" keeps the good line
    lines = [json.dumps(rows[0]), json.dumps({"video": rows[1]["video"]}), json.dumps({**rows[1], "video": "../x.mp4"})]
    (tiny_world / "tspo10k_bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as err:
        split_records(load_config(config, [*over, "data.train=tspo10k_bad.jsonl"]), "train")
    assert "tspo10k_bad.jsonl:2" in str(err.value) and "'../x.mp4' climbs out of the data root" in str(err.value)
    got, problems = split_records(load_config(config, [*over, "data.train=tspo10k_bad.jsonl",
                                                       "data.on_bad_record=skip"]), "train")
    assert [g.id for g in got] == [records[0].id] and len(problems) == 2
    with pytest.raises(ConfigError, match="data.train_format"):
        load_config(config, ["data.train_format=tspo-10k"])
