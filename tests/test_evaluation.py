"""Evaluation: selections, summaries and the job's files."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord
from tspo_ray.evaluation.accuracy import format_table, select_frames, summarise
from tspo_ray.method.agent import TemporalAgent


def item():
    frames = torch.eye(16)[:10] + 0.01
    text = torch.eye(16)[3]
    rec = QARecord("q1", "v.mp4", "What colour is the star?", ["red", "blue"], "A", "needle", [[3.0, 4.0]], 10.0,
                   {"family": "needle_attribute"})
    return FeatureItem(rec, frames, text, np.arange(10) * 2, np.arange(10, dtype=float), "v.mp4")


def test_select_frames_methods():
    it = item()
    assert select_frames(it, "uniform", 2, None)["positions"] == [2, 7]
    clip = select_frames(it, "clip-top-k", 1, None)
    assert clip["positions"] == [3] and clip["frame_indices"] == [6] and clip["timestamps_s"] == [3.0]
    with pytest.raises(ValueError, match="needs agent weights"):
        select_frames(it, "agent", 2, None)
    # SCORER:METHOD names and the agent's recorded inference mode
    torch.manual_seed(0)
    agent = TemporalAgent(16, window=4, heads=4).eval()
    for method in ("top-k", "bin-max", "aks", "top-k+edges"):
        got = select_frames(it, f"agent:{method}", 4, agent)
        assert got["method"] == f"agent:{method}" and len(got["positions"]) <= 4
        assert select_frames(it, "agent", 4, agent, inference_mode=method)["positions"] == got["positions"]
    assert select_frames(it, "clip:top-k+edges", 3, None)["positions"] == [0, 3, 9]
    with pytest.raises(ValueError, match="unknown selector"):
        select_frames(it, "clip:best", 2, None)


def test_summary_and_table():
    rows = [
        {"family": "a", "correct": 1.0, "r_temporal": 0.5, "predicted": "A", "selection_ms": 1.0},
        {"family": "a", "correct": 0.0, "r_temporal": 0.0, "predicted": None, "selection_ms": 3.0},
        {"family": "b", "correct": 1.0, "r_temporal": 1.0, "predicted": "B", "selection_ms": 2.0},
    ]
    s = summarise(rows)
    assert s["questions"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    assert s["per_family"] == {"a": {"accuracy": 0.5, "questions": 2}, "b": {"accuracy": 1.0, "questions": 1}}
    assert s["mean_r_temporal"] == pytest.approx(0.5) and s["parse_failure_rate"] == pytest.approx(1 / 3)
    table = format_table({"uniform": s})
    assert "uniform" in table and "66.7" in table and "50.0" in table


def test_evaluate_job_writes_results(tiny_world, tiny_hf_clip, tmp_path):
    from tspo_ray.config import load_config
    from tspo_ray.evaluation.split_job import run_evaluation

    enc = f"{{backend: hf, model: {tiny_hf_clip}}}"
    cfg = load_config(overrides=[f"data.root={tiny_world}", f"features.encoder={enc}", f"features.store={tmp_path}/fs",
                                 f"answerer.settings={{encoder: {enc}}}", "features.max_candidates=32"])
    out = run_evaluation(cfg, "test", ["uniform", "clip-top-k", "bin-max"], tmp_path / "eval", progress=False)
    assert set(out["results"]) == {"uniform", "clip-top-k", "bin-max"}
    lines = (tmp_path / "eval" / "selections.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"id", "method", "frame_indices", "timestamps_s", "scores"} <= set(first)
    assert len(first["frame_indices"]) == 8 and first["frame_indices"] == sorted(first["frame_indices"])
    assert len(lines) == 3 * out["results"]["uniform"]["questions"]
    assert "| uniform" in (tmp_path / "eval" / "table.md").read_text()


def test_evaluation_fails_when_the_answerer_rejects_every_request(tiny_world, tiny_hf_clip, tmp_path):
    """A real tiny Qwen2.5-VL answerer sized for 4 frames, asked about 8: every request is rejected before the model
    runs. The job must stop with the reason instead of reporting 0% accuracy."""
    import sys
    from pathlib import Path

    from helpers.tiny_models import build_tiny_qwen2_5_vl

    from tspo_ray.answerers import build_answerer
    from tspo_ray.config import load_config
    from tspo_ray.evaluation.accuracy import AllRequestsRejected, check_answered
    from tspo_ray.evaluation.split_job import run_evaluation

    enc = f"{{backend: hf, model: {tiny_hf_clip}}}"
    cfg = load_config(overrides=[f"data.root={tiny_world}", f"features.encoder={enc}", f"features.store={tmp_path}/fs",
                                 "features.max_candidates=32", "data.max_eval_questions=3", "eval.num_frames=8"])
    answerer = build_answerer("hf", model=str(build_tiny_qwen2_5_vl(tmp_path / "qwen")), num_frames=4, max_tokens=2,
                              dtype="float32")
    with pytest.raises(AllRequestsRejected, match=r"selector uniform: the answerer rejected all 3 requests.*"
                                                  r"8 frames, more than num_frames=4"):
        run_evaluation(cfg, "test", ["uniform"], tmp_path / "eval", answerer=answerer, progress=False)
    assert not (tmp_path / "eval" / "results.json").exists()  # no table of zeros left behind
    check_answered("uniform", [{"error": "x"}, {"error": None}])  # one answered question is a result
    check_answered("uniform", [])


def test_one_request_shape_for_every_record_and_frame_set():
    from tspo_ray.answerers.base import AnswerRequest

    rec = QARecord(id="q7", video="v.mp4", question="What is red?", options=["a star", "a square"], answer="B",
                   type="needle", target_spans=[[1.0, 2.0]], duration_s=9.5)
    req = AnswerRequest.for_record(rec, Path("/data/v.mp4"), np.array([30, 60]), np.array([1.0, 2.0]), "clip:top-k")
    assert req.key == "q7#clip:top-k" and req.video == "/data/v.mp4"
    assert req.frame_indices == (30, 60) and all(type(i) is int for i in req.frame_indices)
    assert req.timestamps_s == (1.0, 2.0) and req.options == ("a star", "a square") and req.duration_s == 9.5
    # what a model would see, and nothing more: no answer, no spans
    assert "B" not in {str(v) for v in vars(req).values()} and not hasattr(req, "target_spans")
