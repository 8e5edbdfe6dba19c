"""The frame_idx export (the benchmark's own file written back, as lmms-eval adaptations read it) and the resumable
benchmark run. Fixtures follow the real files' layouts (LongVideoBench lvb_val.json, MLVU mlvu.json, LVBench
video_info.meta.jsonl); the QARecords are written here as the importers would produce them. The whole job on each
benchmark's fixture: tests/test_benchmark_job.py."""
import json

import pytest

from tspo_ray.data.frame_idx_export import ExportError, export_frame_idx, frame_idx_value
from tspo_ray.data.records import QARecord
from tspo_ray.evaluation.benchmark import BenchmarkRun, BenchmarkRunError, PartialResults, run_benchmark


def lvb_rows(n):
    return [{"video_id": f"vid{i}", "question": f"What happens in scene {i}?", "candidates": ["a dog", "a cat"],
             "correct_choice": i % 2, "id": f"vid{i}_0", "video_path": f"vid{i}.mp4", "duration_group": 600,
             "question_category": "TOS", "duration": 190.16} for i in range(n)]


def lvb_records(rows):
    return [QARecord(r["id"], r["video_path"], r["question"], r["candidates"], "AB"[r["correct_choice"]],
                     meta={"duration_group": r["duration_group"]}) for r in rows]


def test_export_writes_back_every_question_with_sorted_float_frame_idx(tmp_path):
    rows = lvb_rows(3)
    ann = tmp_path / "lvb_val.json"
    ann.write_text(json.dumps(rows))
    counts = export_frame_idx("longvideobench", ann, {"vid0_0": [90, 0, 30], "vid2_0": [5], "nosuch": [1]},
                              tmp_path / "out" / "lvb_val.json")
    out = json.loads((tmp_path / "out" / "lvb_val.json").read_text())
    assert counts == {"questions": 3, "exported": 2, "empty": 1, "unmatched": 1}
    assert out[0]["frame_idx"] == [0.0, 30.0, 90.0] and all(isinstance(v, float) for v in out[0]["frame_idx"])
    assert out[1]["frame_idx"] == [] and out[2]["frame_idx"] == [5.0]  # no selection: the readers' uniform fallback
    assert [{k: v for k, v in r.items() if k != "frame_idx"} for r in out] == rows  # nothing else changes


def test_export_mlvu_and_lvbench_ids(tmp_path):
    mlvu = [{"video_name": "needle_32.mp4", "duration": 467.98, "question": "What does the hand do?\n(A) x\n(B) y\n",
             "candidates": ["x", "y"], "answer": "A", "task_type": "needle", "question_id": "Q0"}]
    (tmp_path / "mlvu.json").write_text(json.dumps(mlvu))
    export_frame_idx("mlvu", tmp_path / "mlvu.json", {"Q0": [3, 1]}, tmp_path / "o" / "mlvu.json")
    assert json.loads((tmp_path / "o" / "mlvu.json").read_text())[0]["frame_idx"] == [1.0, 3.0]
    lines = [{"key": "Cm73ma6Ibcs", "type": "cartoon", "qa": [
        {"uid": 55, "question": "What year?\n(A) 1636\n(B) 1633", "answer": "B",
         "question_type": ["key information retrieval"], "time_reference": "00:15-00:19"},
        {"uid": 56, "question": "Weather?\n(A) Cloudy\n(B) Snowy", "answer": "B",
         "question_type": ["event understanding"], "time_reference": "00:20-00:25"}]}]
    (tmp_path / "video_info.meta.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    counts = export_frame_idx("lvbench", tmp_path / "video_info.meta.jsonl", {"Cm73ma6Ibcs56": [40]},
                              tmp_path / "o" / "video_info.meta.jsonl")
    out = [json.loads(x) for x in (tmp_path / "o" / "video_info.meta.jsonl").read_text().splitlines()]
    assert counts["questions"] == 2 and [qa["frame_idx"] for qa in out[0]["qa"]] == [[], [40.0]]


def test_export_errors_name_the_file_and_entry(tmp_path):
    assert frame_idx_value(range(64)) == [float(i) for i in range(64)]
    with pytest.raises(ExportError, match="65 frames.*at most 64"):
        frame_idx_value(range(65))
    (tmp_path / "dup.json").write_text(json.dumps(lvb_rows(1) * 2))
    with pytest.raises(ExportError, match="dup.json: question id 'vid0_0' appears twice"):
        export_frame_idx("longvideobench", tmp_path / "dup.json", {}, tmp_path / "x.json")
    (tmp_path / "noid.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(ExportError, match="noid.json: entry 1: missing 'question_id'"):
        export_frame_idx("videomme", tmp_path / "noid.json", {}, tmp_path / "x.json")
    (tmp_path / "bad.jsonl").write_text('{"key": "a", "qa": []}\n{"key": \n')
    with pytest.raises(ExportError, match=r"bad.jsonl:2: not JSON"):
        export_frame_idx("lvbench", tmp_path / "bad.jsonl", {}, tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match="tsv: no annotation JSON"):
        export_frame_idx("tsv", tmp_path / "noid.json", {}, tmp_path / "x.json")


class Killed(Exception):
    """Stands in for the process being killed between two questions."""


def grid_select(calls, kill_after=None):
    """Every 30th native frame of a 1-fps grid, offset by the question number: a fixed, known selection."""
    def select(record, selector):
        if kill_after is not None and len(calls) >= kill_after:
            raise Killed
        calls.append((selector, record.id))
        n = int(record.id[3:].split("_")[0])
        return {"frame_indices": [n + 30 * j for j in range(4)], "timestamps_s": [n / 30 + j for j in range(4)],
                "scores": None, "video": record.video}
    return select


def test_killed_run_resumes_without_redoing_finished_questions(tmp_path):
    rows = lvb_rows(7)
    ann = tmp_path / "lvb_val.json"
    ann.write_text(json.dumps(rows))
    records = lvb_records(rows)
    run = BenchmarkRun("longvideobench", ann, tmp_path / "out", ["uniform", "clip:top-k"], 4, {"checkpoint": None})
    first: list = []
    with pytest.raises(Killed):
        run_benchmark(run, records, grid_select(first, kill_after=9), chunk_size=3, progress=False)
    assert len(PartialResults(run.out_dir / "partial.jsonl").load()) == 9  # three whole chunks were recorded
    with open(run.out_dir / "partial.jsonl", "a") as fh:
        fh.write('{"id": "vid3_0", "sel')  # a write torn by the kill
    second: list = []
    with pytest.warns(UserWarning, match="set aside"):
        summary = run_benchmark(run, records, grid_select(second), chunk_size=3, progress=False)
    assert len(first) == 9 and sorted(second) == sorted(set((s, r.id) for s in run.selectors for r in records)
                                                        - set(first))
    assert len((run.out_dir / "partial.jsonl").read_text().splitlines()) == 14  # torn line gone, nothing twice
    for selector in run.selectors:
        out = json.loads(run.frame_idx_path(selector).read_text())
        assert [r["frame_idx"] for r in out] == [[float(i + 30 * j) for j in range(4)] for i in range(7)]
        assert summary["selectors"][selector]["exported"] == 7
    assert run.frame_idx_path("clip:top-k").parent.name == "clip_top-k"
    third: list = []
    run_benchmark(run, records, grid_select(third), progress=False)
    assert third == []  # all finished: nothing redone
    other = BenchmarkRun("longvideobench", ann, run.out_dir, run.selectors, 8, {"checkpoint": None})
    with pytest.raises(BenchmarkRunError, match="other settings .*num_frames"):
        run_benchmark(other, records, grid_select([]), progress=False)


def test_failed_questions_export_empty_and_are_reported(tmp_path):
    rows = lvb_rows(2)
    ann = tmp_path / "lvb_val.json"
    ann.write_text(json.dumps(rows))

    def select(record, selector):
        if record.id == "vid1_0":
            raise ValueError("vid1.mp4: cannot read the file")
        return {"frame_indices": [7, 3], "timestamps_s": [7.0, 3.0], "video": record.video}

    run = BenchmarkRun("longvideobench", ann, tmp_path / "out", ["uniform"], 2, {})
    summary = run_benchmark(run, lvb_records(rows), select, progress=False)
    entry = summary["selectors"]["uniform"]
    assert entry["failed"] == ["vid1_0: vid1.mp4: cannot read the file"] and entry["empty"] == 1
    assert [r["frame_idx"] for r in json.loads(run.frame_idx_path("uniform").read_text())] == [[3.0, 7.0], []]
