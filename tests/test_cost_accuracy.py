"""benchmarks/cost_accuracy.py's arithmetic and table, in process on made-up measurements."""
from __future__ import annotations

import pytest

from helpers.scripts import load_script
from tspo_ray.answerers.simulated import LatencyModel


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/cost_accuracy.py")


LATENCY = LatencyModel(per_call_s=0.8, per_request_s=0.01, per_frame_s=0.1)


def test_a_row_adds_selection_and_the_latency_models_answering(bench):
    row = bench.cost_row("clip:top-k", 16, 0.5, selection_ms_q=2.0, questions_per_video=4, extract_ms_video=100.0,
                         text_ms_q=1.0, metadata_ms_video=0.5, latency=LATENCY, answer_batch=8)
    answer = 0.8 / 8 + 0.01 + 16 * 0.1  # the call's cost shared by 8 questions, then the question's own
    assert row["answer_s_q"] == pytest.approx(answer)
    assert row["selection_ms_video"] == pytest.approx(8.0)
    assert row["uncached_ms_video"] == pytest.approx(100.0 + 4 * (2.0 + 1.0))
    assert row["uncached_ms_q"] == pytest.approx(112.0 / 4)
    assert row["gpu_s_per_1k"] == pytest.approx(1000 * (0.002 + answer))
    assert row["gpu_s_per_1k_uncached"] == pytest.approx(1000 * (0.028 + answer))


def test_uniform_needs_no_features_nor_text(bench):
    row = bench.cost_row("uniform", 8, 0.3, selection_ms_q=0.1, questions_per_video=2, extract_ms_video=100.0,
                         text_ms_q=1.0, metadata_ms_video=0.5, latency=LATENCY, answer_batch=1)
    assert row["uncached_ms_video"] == pytest.approx(0.5 + 2 * 0.1)
    assert row["answer_s_q"] == pytest.approx(0.8 + 0.01 + 0.8)


def test_the_table_has_one_line_per_row(bench):
    rows = [bench.cost_row(s, k, 0.5, 1.0, 2, 10.0, 1.0, 0.1, LATENCY, 8) for s in ("uniform", "agent")
            for k in (8, 64)]
    lines = bench.format_table(rows).splitlines()
    assert len(lines) == 2 + 4 and lines[2].startswith("| uniform | 8 | 50.0 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_the_picture_is_written(bench, tmp_path):
    rows = [bench.cost_row(s, k, 0.1 * k / 8, 1.0, 2, 10.0, 1.0, 0.1, LATENCY, 8) for s in ("uniform", "agent")
            for k in (8, 16)]
    bench.plot(rows, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
