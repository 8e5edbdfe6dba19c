"""Benchmark importers on fixtures copied from the real annotation files (TSPO's evaluation/jsons/ and
evaluation/data/*.tsv, records cut out unchanged), plus malformed variants written in tmp_path."""
import json
from pathlib import Path

import pytest

from tspo_ray.data.benchmarks import (
    FORMATS,
    BenchmarkFormatError,
    clock_to_seconds,
    list_formats,
    load,
    time_reference_to_spans,
)
from tspo_ray.data.records import RecordError

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


def by_id(name, file, root="/videos"):
    return {r.id: r for r in load(name, FIX / file, root)}


def test_longvideobench_ids_answers_options_and_duration_groups():
    recs = by_id("longvideobench", "lvb_val.json")
    assert set(recs) == {"86CxyhFV9MI_0", "QJ6sjg7SXOQ_0", "kj3Po7zUeyw_0"}
    r = recs["86CxyhFV9MI_0"]  # correct_choice 1
    assert r.answer == "B" and len(r.options) == 4 and r.options[1].startswith("run away countless times")
    assert r.video == "/videos/86CxyhFV9MI.mp4" and r.duration_s == pytest.approx(190.16)
    assert r.question.startswith("In the video, which subtitles") and "\n" not in r.question
    assert r.meta["duration_group"] == 600 and r.meta["group"] == "600" and r.meta["question_category"] == "TOS"
    assert recs["QJ6sjg7SXOQ_0"].answer == "E" and len(recs["QJ6sjg7SXOQ_0"].options) == 5
    assert recs["kj3Po7zUeyw_0"].options == ["White", "Black", "Asian"] and recs["kj3Po7zUeyw_0"].answer == "B"


def test_mlvu_inline_options_are_cut_from_the_question():
    recs = by_id("mlvu", "mlvu.json")
    assert set(recs) == {"Q0", "Q1448", "Q1113", "Q761"}
    r = recs["Q0"]
    assert r.question == "What does the hand coming out of the computer do?"
    assert r.options == ["Delivers a product", "Shakes the woman's hand", "Takes the woman's credit card",
                         "Points at something on the screen"]
    assert r.answer == "A" and r.video == "/videos/needle_32.mp4" and r.meta["task_type"] == "needle"
    assert r.meta["group"] == "needle" and r.family == "needle"
    assert recs["Q1448"].options == ["Six", "Three", "Three", "Eight"] and recs["Q1448"].answer == "B"
    assert recs["Q761"].question == "What did I put in the orange trashcan" and recs["Q761"].meta["group"] == "ego"


def test_videomme_letter_prefixes_removed_and_duration_buckets():
    recs = by_id("videomme", "videomme.json")
    assert set(recs) == {"001-1", "072-3", "601-1"}
    r = recs["001-1"]
    assert r.options == ["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."]
    assert r.answer == "C" and r.video == "/videos/fFjv93ACGo8.mp4" and r.meta["duration_bucket"] == "short"
    # its question lists "(a) ... (e)" steps: they are part of the question, not options
    seq = recs["072-3"]
    assert "(e) Adjust the seat." in seq.question and seq.options[1] == "(c)(e)(a)(b)(d)." and seq.answer == "B"
    assert recs["601-1"].meta["group"] == "long"


def test_videomme_falls_back_to_the_mkv_like_lmms_eval(tmp_path):
    (tmp_path / "fFjv93ACGo8.mkv").write_bytes(b"")
    recs = by_id("videomme", "videomme.json", tmp_path)
    assert recs["001-1"].video == str(tmp_path / "fFjv93ACGo8.mkv")
    assert recs["072-3"].video == str(tmp_path / "VsuShNWghXk.mp4")  # nothing there: the .mp4 name


def test_lvbench_ids_spans_in_seconds_and_question_types():
    recs = by_id("lvbench", "video_info.meta.jsonl")
    assert len(recs) == 7
    r = recs["Cm73ma6Ibcs55"]
    assert r.question == "What year appears in the opening caption of the video?"
    assert r.options == ["1636", "1366", "1363", "1633"] and r.answer == "D"
    assert r.target_spans == [[15.0, 19.0]] and r.video == "/videos/Cm73ma6Ibcs.mp4"
    assert r.duration_s == pytest.approx(61.09166666666667 * 60)
    assert recs["Cm73ma6Ibcs56"].target_spans == [[0.0, 76.0]]  # "00:00-01:16"
    assert recs["5dZ_lvDgevk899"].target_spans == [[0.0, 114 * 60 + 16.0]]  # "00:00-114:16"
    assert recs["rSE2YPcv89U3630"].target_spans == [[49 * 60 + 23.0, 99 * 60 + 46.0]]  # uid is an int there
    assert recs["Vk_Af0htZGU5044"].target_spans == [[497.0, 497.0]]  # "08:17-None": one moment
    two = recs["Hf-n1yfd8II3925"]  # "None-None", two question types
    assert two.target_spans == [] and two.meta["groups"] == ["temporal grounding", "reasoning"]
    assert two.meta["group"] == "temporal grounding"
    rev = recs["28CIeC8cZks221"]  # "33:52-33:46" in the real file: kept, without a span, and said why
    assert rev.target_spans == [] and "ends before it starts" in rev.meta["time_reference_error"]


def test_tsv_letters_texts_quotes_and_duplicate_candidates():
    lvb = by_id("tsv", "LVBench.tsv")
    assert lvb["Cm73ma6Ibcs55"].answer == "D" and lvb["Cm73ma6Ibcs55"].options[3] == "1633"
    assert lvb["FaV0tIaWWEg2119"].answer == "C"  # answer `"Microsoft" and the logo`, a literal leading quote
    assert lvb["FaV0tIaWWEg2119"].options[2] == '"Microsoft" and the logo'
    assert lvb["wgBlACG927Y3105"].answer == "D"
    assert lvb["moALQl818ZY5256"].answer == "D"  # '1 to 2' is both C and D; answer_number 3 says D
    assert lvb["Cm73ma6Ibcs55"].meta["group"] == "cartoon_key information retrieval"
    mlvu = by_id("tsv", "MLVU.tsv")
    assert mlvu["1_mlvu_1"].answer == "A" and mlvu["336_mlvu_336"].answer == "C"
    assert mlvu["1007_mlvu_1007"].answer == "B" and mlvu["540_mlvu_540"].meta["task_name"] == "findNeedle"
    assert mlvu["1_mlvu_1"].video == "/videos/movie101_66.mp4"
    mme = by_id("tsv", "VideoMME.tsv")
    assert mme["001-1"].options[0] == "Apples." and mme["001-1"].answer == "C"
    assert by_id("tsv", "LongVideoBench.tsv")["86CxyhFV9MI_1"].answer == "C"


def test_tsv_and_json_of_the_same_benchmark_agree():
    for json_name, json_file, tsv_file in [("lvbench", "video_info.meta.jsonl", "LVBench.tsv"),
                                           ("longvideobench", "lvb_val.json", "LongVideoBench.tsv"),
                                           ("videomme", "videomme.json", "VideoMME.tsv")]:
        from_json, from_tsv = by_id(json_name, json_file), by_id("tsv", tsv_file)
        for rid, r in from_tsv.items():
            if rid in from_json:
                assert (r.answer, r.options, r.video) == (from_json[rid].answer, from_json[rid].options,
                                                          from_json[rid].video), rid
                assert " ".join(r.question.split()) == " ".join(from_json[rid].question.split())


def test_tspo10k_both_option_styles_and_needle_items():
    recs = load("tspo10k", FIX / "tspo10k.jsonl", "/data/videos")
    assert [r.id for r in recs] == ["tspo10k-1", "tspo10k-2", "tspo10k-3"]
    a, b, c = recs
    assert a.question == "What is the scene at the beginning of the video?" and a.answer == "A"
    assert a.options[1] == "enchanted, mist-shrouded forest." and a.video == "/data/videos/demo/208.mp4"
    assert b.options == ["A wrench", "A pair of gloves", "A screwdriver", "An oil can"] and b.answer == "C"
    assert b.question.endswith("bicycle chain?")  # instruction sentence stripped, no "<image>"
    assert b.type == "general" and b.meta["tspo_type"] == "specific" and b.meta["needle_source"] is True
    assert a.meta["needle_source"] is False
    assert c.question == "How many times does the dog jump over the fence?" and len(c.options) == 5
    assert c.answer == "B"


def test_clock_formats():
    assert clock_to_seconds("01:16") == 76 and clock_to_seconds("114:16") == 6856
    assert clock_to_seconds("1:02:03") == 3723 and clock_to_seconds("0:00:07.5") == 7.5
    assert time_reference_to_spans("1:00:00-1:00:30") == [[3600.0, 3630.0]]
    with pytest.raises(ValueError, match="not MM:SS"):
        clock_to_seconds("ab:cd")


def test_formats_table_describes_every_loader():
    assert set(list_formats()) == set(FORMATS) == {"tspo10k", "longvideobench", "mlvu", "videomme", "lvbench",
                                                   "tsv"}
    assert all(isinstance(d, str) and d for d in list_formats().values())
    with pytest.raises(ValueError, match="unknown benchmark format"):
        load("nope", FIX / "mlvu.json")


# ------------------------------------------------------------------------------------------ malformed input

def _rewrite_json(tmp_path, name, mutate):
    rows = json.loads((FIX / name).read_text())
    mutate(rows)
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


def _rewrite_lines(tmp_path, name, lineno, new_line):
    lines = (FIX / name).read_text(encoding="utf-8").split("\n")
    lines[lineno - 1] = new_line
    path = tmp_path / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("name,file,mutate,where,reason", [
    ("longvideobench", "lvb_val.json", lambda rs: rs[1].update(correct_choice=7), "[record 1]",
     "'correct_choice' = 7 is not an option index"),
    ("longvideobench", "lvb_val.json", lambda rs: rs[2].pop("video_path"), "kj3Po7zUeyw_0",
     "missing field 'video_path'"),
    ("mlvu", "mlvu.json", lambda rs: rs[0].update(answer="F"), "Q0", "'answer' \"F\" is not one of"),
    ("mlvu", "mlvu.json", lambda rs: rs[3].update(question="What did I put in the orange trashcan"), "Q761",
     "no options"),
    ("videomme", "videomme.json", lambda rs: rs[0]["options"].__setitem__(1, "Candles."), "001-1",
     "does not start with 'B. '"),
    ("videomme", "videomme.json", lambda rs: rs[2].update(duration="huge"), "601-1", "not short, medium or long"),
])
def test_malformed_json_records_name_file_record_and_reason(tmp_path, name, file, mutate, where, reason):
    path = _rewrite_json(tmp_path, file, mutate)
    with pytest.raises(BenchmarkFormatError if "not one of" not in reason else RecordError) as err:
        load(name, path)
    msg = str(err.value)
    assert str(path) in msg and where in msg and reason in msg


def test_malformed_lines_name_file_line_and_reason(tmp_path):
    cases = [
        ("lvbench", "video_info.meta.jsonl", 2, '{"key": "28CIeC8cZks", "qa": [', ":2", "not valid JSON"),
        ("lvbench", "video_info.meta.jsonl", 1, json.dumps({"key": "Cm73ma6Ibcs", "type": "cartoon", "qa": [
            {"uid": "55", "question": "Q?\n(A) x\n(B) y", "answer": "A", "question_type": ["reasoning"],
             "time_reference": "ab:cd-00:10"}]}), ":1 qa[0] (id=Cm73ma6Ibcs55)", "not MM:SS"),
        ("tspo10k", "tspo10k.jsonl", 3, json.dumps({"video": "v.mp4", "original_question": "<image>\nQ?\nA. x\nB. y",
                                                    "solution": "b", "type": "general"}), ":3", "<answer>x</answer>"),
        ("tspo10k", "tspo10k.jsonl", 1, json.dumps({"video": "v.mp4", "original_question": "<image>\nQ? no options",
                                                    "solution": "<answer>a</answer>"}), ":1", "no options"),
        ("tsv", "MLVU.tsv", 3, "336_mlvu_336\tplotQA\tmovie101_21.mp4\t0\tHow many?\t2\t['Six', 'Three']",
         ":3", "7 tab-separated columns"),
        ("tsv", "MLVU.tsv", 2, "1_mlvu_1\tplotQA\tm.mp4\t0\tQ?\t0\t__import__('os').getcwd()\tYellow",
         ":2 (id='1_mlvu_1')", "not a Python list literal"),
        ("tsv", "MLVU.tsv", 2, "1_mlvu_1\tplotQA\tm.mp4\t0\tQ?\t0\t['Red', 'Blue']\tYellow",
         ":2 (id='1_mlvu_1')", "neither an option letter nor exactly one option's text"),
        ("tsv", "VideoMME.tsv", 2, "001-1\tVideoMME\tf.mp4\t001-1\tQ?\t2\t['A. x', 'B. y', 'C. z']\tA",
         ":2 (id='001-1')", "disagrees with answer_number 2"),
        ("tsv", "LongVideoBench.tsv", 1, "index\tquestion\tanswer", ":1", "header"),
    ]
    for name, file, lineno, line, where, reason in cases:
        path = _rewrite_lines(tmp_path, file, lineno, line)
        with pytest.raises(BenchmarkFormatError) as err:
            load(name, path)
        msg = str(err.value)
        assert f"{path}{where}" in msg and reason in msg, (file, msg)


def test_errors_list_quarantines_bad_records_and_keeps_the_rest(tmp_path):
    path = _rewrite_lines(tmp_path, "MLVU.tsv", 3, "336_mlvu_336\tplotQA\tx.mp4\t0\tQ?\t9\t['a', 'b']\tc")
    errors = []
    recs = load("tsv", path, errors=errors)
    assert [r.id for r in recs] == ["1_mlvu_1", "540_mlvu_540", "1007_mlvu_1007"]
    assert len(errors) == 1 and errors[0]["where"] == f"{path}:3" and "336_mlvu_336" in errors[0]["reason"]


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    with pytest.raises(BenchmarkFormatError, match="annotation file not found"):
        load("mlvu", tmp_path / "absent.json")
