"""benchmarks/scale.py's latency-model schedule and its verdict on what limits a row, in process."""
from __future__ import annotations

import pytest

from helpers.scripts import load_script


@pytest.fixture(scope="module")
def scale():
    return load_script("benchmarks/scale.py")


def test_the_modelled_batch_is_as_long_as_its_largest_equal_call(scale):
    per_call = lambda q: 1.0 + q  # noqa: E731
    assert scale.scheduled_batch_seconds(16, 1, 32, per_call) == (8.0, 5.0)  # 8 calls of 4
    assert scale.scheduled_batch_seconds(64, 1, 32, per_call) == (32.0, 2.0)  # one question a call
    assert scale.scheduled_batch_seconds(12, 1, 32, per_call) == (6.0, 7.0)  # 6 calls: 6, 6, 5, 5, 5, 5


def row(n, overrun, modelled, steps_per_s=1.0, wait=0.5):
    return {"n": n, "steps_per_s": steps_per_s, "questions": 32, "time_sample_s": 0.1, "time_answer_s": 1.0,
            "time_learn_s": 0.2, "time_wait_s": wait, "time_broadcast_s": 0.01, "time_answer_compute_s": 0.3,
            "time_answer_overrun_s": overrun, "time_answer_modelled_s": modelled, "store_weight_bytes": 1e4,
            "store_result_bytes": 1e4, "cpu_busy": 0.5}


def test_rows_whose_calls_overran_the_model_are_put_down_to_the_box(scale, capsys):
    scale.print_table("spread", [row(16, 0.0, 10.0), row(32, 0.4, 10.0), row(64, 2.0, 10.0)], 1 / 16)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| 16 ") or line.startswith("| 32 ")
             or line.startswith("| 64 ")]
    assert lines[0].endswith("| design |") and lines[1].endswith("| design |")  # 4% is within the 5% allowed
    assert lines[2].endswith("| box (20% overrun) |")
    assert "the box, not the design, limits N = 64" in out


def test_a_batch_slower_than_its_schedule_without_overruns_is_put_outside_the_calls(scale, capsys):
    slow = {**row(32, 0.0, 10.0), "time_answer_s": 2.5, "scheduled_answer_s": 1.64}
    on_time = {**row(16, 0.0, 10.0), "time_answer_s": 3.2, "scheduled_answer_s": 3.17}
    scale.print_table("spread", [on_time, slow], 1 / 16)
    out = capsys.readouterr().out
    assert "| design |" in out and "| outside the calls (+52%) |" in out
    assert "at N = 32 the calls kept to their modelled time" in out
