"""Resumable files and their writers: an unreadable line is set aside, never a reason to drop the lines after it; a
second benchmark run on one --out is refused while the first runs; two processes writing one feature store lose
nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tspo_ray.data.records import QARecord
from tspo_ray.evaluation.benchmark import BenchmarkRun, BenchmarkRunError, PartialResults, run_benchmark
from tspo_ray.safe_files import LockedError, SetAsideWarning, WriterLock
from tspo_ray.video.features import FeatureStore


def _rows(n):
    return [{"selector": "uniform", "id": f"q{i}", "frame_indices": [i]} for i in range(n)]


def test_a_torn_line_in_the_middle_is_set_aside_and_the_later_lines_kept(tmp_path):
    path = tmp_path / "partial.jsonl"
    lines = [json.dumps(r) for r in _rows(5)]
    lines[2] = lines[2][:17]  # torn: a write cut short, then more rows appended by a resumed run
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(SetAsideWarning, match=r"partial.jsonl: 1 unreadable line\(s\) \(3\) set aside in .*set-aside"):
        done = PartialResults(path).load()
    assert sorted(i for _, i in done) == ["q0", "q1", "q3", "q4"]
    assert lines[2] in (tmp_path / "partial.jsonl.set-aside").read_text()
    PartialResults(path).append(_rows(6)[5:])  # the next append starts on a line of its own
    assert sorted(i for _, i in PartialResults(path).load()) == ["q0", "q1", "q3", "q4", "q5"]


def test_a_torn_last_line_without_newline_does_not_swallow_the_next_append(tmp_path):
    path = tmp_path / "partial.jsonl"
    path.write_text(json.dumps(_rows(1)[0]) + "\n" + '{"id": "q1", "sel')
    with pytest.warns(SetAsideWarning):
        assert len(PartialResults(path).load()) == 1
    PartialResults(path).append(_rows(3)[1:])
    assert len(PartialResults(path).load()) == 3


def _benchmark(tmp_path):
    """Three LongVideoBench questions (lvb_val.json's layout) and a run over them."""
    rows = [{"video_id": f"vid{i}", "question": f"What happens in scene {i}?", "candidates": ["a dog", "a cat"],
             "correct_choice": i % 2, "id": f"vid{i}_0", "video_path": f"vid{i}.mp4", "duration_group": 600,
             "question_category": "TOS", "duration": 190.16} for i in range(3)]
    ann = tmp_path / "lvb_val.json"
    ann.write_text(json.dumps(rows))
    run = BenchmarkRun("longvideobench", ann, tmp_path / "out", ["uniform"], 4, {"checkpoint": None})
    records = [QARecord(r["id"], r["video_path"], r["question"], r["candidates"], "AB"[r["correct_choice"]],
                        meta={"duration_group": r["duration_group"]}) for r in rows]
    return run, records


def _select(record, selector):
    return {"frame_indices": [0, 30, 60, 90], "timestamps_s": [0.0, 1.0, 2.0, 3.0], "scores": None,
            "video": record.video}


def test_a_second_run_on_one_out_is_refused_while_the_first_runs(tmp_path):
    run, records = _benchmark(tmp_path)
    refusals = []

    def select_and_start_a_second_run(record, selector):
        if not refusals:
            with pytest.raises(BenchmarkRunError) as err:
                run_benchmark(run, records, _select, progress=False)
            refusals.append(str(err.value))
        return _select(record, selector)

    run_benchmark(run, records, select_and_start_a_second_run, progress=False)
    assert refusals and f"pid {os.getpid()}" in refusals[0] and "in use" in refusals[0]
    assert len(PartialResults(run.out_dir / "partial.jsonl").load()) == 3  # the first run finished, alone


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    run, records = _benchmark(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.out_dir.mkdir()
    (run.out_dir / ".lock").write_text(f"pid {dead.pid} on this host\n")
    run_benchmark(run, records, _select, progress=False)
    assert (run.out_dir / ".lock").read_text().startswith(f"pid {os.getpid()} ")


def test_a_lock_held_by_another_process_names_it(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from tspo_ray.safe_files import WriterLock
with WriterLock({str(lock)!r}, "x"):
    print("held", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"x is in use by pid {holder.pid} .*lock file .*x.lock"):
            WriterLock(lock, "x").__enter__()
    finally:
        holder.kill()
        holder.wait()
    with WriterLock(lock, "x"):  # the holder died: its lock is taken over
        pass


_WRITER = """
import sys, torch
from tspo_ray.video.features import FeatureStore

class Encoder:
    name = "fake-encoder"
    def encode_text(self, texts):
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])

root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = FeatureStore(root)
for i in range(n):
    store.record_errors([{"video": f"{tag}{i}.mp4", "key": f"{tag}{i}", "reason": "bad"}])
    store.text_features(Encoder(), [f"{tag} question {i}"])
"""


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    """Each writer adds 20 error rows and 20 question features one at a time (20 read-merge-writes of each file)."""
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), tag, "20"]) for tag in ("a", "b")]
    assert [w.wait(120) for w in writers] == [0, 0]
    store = FeatureStore(tmp_path)
    assert sorted(e["video"] for e in store.errors()) == sorted(f"{t}{i}.mp4" for t in "ab" for i in range(20))
    text = store._read_text(store._text_path("fake-encoder"))
    assert sorted(text) == sorted(f"{t} question {i}" for t in "ab" for i in range(20))
