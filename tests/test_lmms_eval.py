"""tspo_select in a stock lmms-eval: a task written here over generated videos, a tiny random Qwen2.5-VL as the inner
model, run through lmms-eval's own simple_evaluate. Needs the optional group: `uv sync --group lmms`."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch  # (before lmms-eval: its scikit-learn loaded first makes torch's CPU matmuls crash)

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is the optional group: uv sync --group lmms")

from helpers.lmms_task import write_task  # noqa: E402
from helpers.reference_tspo import reference_scores  # noqa: E402
from helpers.tiny_models import build_tiny_qwen2_5_vl, build_tspo_layout, write_ramp_video  # noqa: E402

K = 4


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, lmms_eval_run):
    root = tmp_path_factory.mktemp("lmms")
    docs = []
    for i in range(3):
        video = write_ramp_video(root / f"video{i}.mp4", num_frames=16 + 2 * i)
        docs.append({"video": str(video), "question": f"What is shown after the ramp {i}?",
                     "options": ["A. dark", "B. light"], "answer": "AB"[i % 2]})
    write_task(root, docs)
    return root, docs


def test_tspo_select_hands_the_inner_model_exactly_the_selected_frames(task_dir, tmp_path, monkeypatch):
    import decord
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from tspo_ray.video import frames as video_io

    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")  # qwen-vl-utils' torchvision reader is gone in 0.26
    root, docs = task_dir
    selector_dir = build_tspo_layout(tmp_path / "selector")
    qwen = build_tiny_qwen2_5_vl(tmp_path / "qwen")
    model_cls = get_model("tspo_select")  # found through the project's entry point
    args = dict(inner="qwen2_5_vl", selector=str(selector_dir), num_frames=K, method="agent:top-k",
                store=str(tmp_path / "store"), clips=str(tmp_path / "clips"), selections=str(tmp_path / "sel.jsonl"),
                inner_pretrained=str(qwen), inner_device="cpu", inner_device_map="cpu", inner_max_num_frames=K,
                inner_max_pixels=64 * 64, inner_min_pixels=28 * 28)
    model = model_cls(**args)
    received, answered = [], {}
    inner_generate = model.inner.generate_until

    def spy(requests):  # what the inner model is handed: one clip per request, read back as it would read it
        for r in requests:
            doc = model.task_dict[r.arguments[4]][r.arguments[5]][r.arguments[3]]
            (clip,) = r.arguments[2](doc)
            reader = decord.VideoReader(clip)
            received.append((r.arguments[3], clip, reader.get_batch(range(len(reader))).asnumpy()))
        outputs = inner_generate(requests)
        answered.update((r.arguments[3], text) for r, text in zip(requests, outputs))
        return outputs

    monkeypatch.setattr(model.inner, "generate_until", spy)
    out = simple_evaluate(model=model, tasks=["tspo_tiny"], task_manager=TaskManager(include_path=str(root / "task")),
                          batch_size=1, device="cpu")
    # lmms-eval's accuracy is the share of the inner model's own answers that start with the document's letter
    assert sorted(answered) == [0, 1, 2]
    expected_accuracy = sum(answered[i].strip()[:1] == docs[i]["answer"] for i in answered) / len(docs)
    assert out["results"]["tspo_tiny"]["accuracy,none"] == pytest.approx(expected_accuracy)

    selections = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert sorted(s["doc_id"] for s in selections) == [0, 1, 2] and len(received) == 3
    for s in selections:
        doc = docs[s["doc_id"]]
        assert s["question"] == doc["question"]  # the question without its options
        expected = reference_top_k(selector_dir, doc["video"], doc["question"], K)
        assert s["frame_indices"] == expected and len(s["frame_indices"]) == K
        (frames,) = [f for doc_id, clip, f in received if doc_id == s["doc_id"]]
        original = video_io.read_frames(doc["video"], s["frame_indices"])
        assert frames.shape[0] == K  # exactly the selected frames, in order, and nothing else
        assert np.abs(frames.astype(int) - original.astype(int)).mean() < 4

    # a second run finds every video's features in the store: nothing is encoded again
    stored = sorted(os.listdir(tmp_path / "store" / "videos"))
    assert len(stored) == 3
    again = model_cls(**{**args, "selections": str(tmp_path / "sel2.jsonl")})
    monkeypatch.setattr(again.selector.encoder, "encode_frames",
                        lambda *a, **k: pytest.fail("frames encoded again"))
    simple_evaluate(model=again, tasks=["tspo_tiny"], task_manager=TaskManager(include_path=str(root / "task")),
                    batch_size=1, device="cpu")
    assert [json.loads(x)["frame_indices"] for x in (tmp_path / "sel2.jsonl").read_text().splitlines()] == \
        [s["frame_indices"] for s in selections]


def first_text(response) -> str:
    """A logged response as text: lmms-eval logs it as a string or nested in lists."""
    while isinstance(response, list):
        response = response[0] if response else ""
    return response


def reference_top_k(selector_dir, video, question, k) -> list[int]:
    """The frames the reference picks, restated without the project's selector: its evaluation grid (every
    round(fps)-th native frame) read by decord at native size, S from the independent restatement of its forward
    pass, the top k in temporal order."""
    import decord

    reader = decord.VideoReader(str(video))
    grid = list(range(0, len(reader), max(1, round(reader.get_avg_fps()))))
    scores, _ = reference_scores(selector_dir, reader.get_batch(grid).asnumpy(), question)
    return sorted(grid[i] for i in torch.topk(scores, k).indices.tolist())


def test_the_lmms_eval_command_line_finds_tspo_select_and_writes_the_accuracy(task_dir, tmp_path, run_process):
    """As a user types it: `python -m lmms_eval --model tspo_select ...`, the model found through the entry point."""
    import sys

    root, docs = task_dir
    selector_dir = build_tspo_layout(tmp_path / "selector")
    qwen = build_tiny_qwen2_5_vl(tmp_path / "qwen")
    model_args = ",".join([
        "inner=qwen2_5_vl", f"selector={selector_dir}", f"num_frames={K}", "method=agent:top-k",
        f"store={tmp_path / 'store'}", f"clips={tmp_path / 'clips'}", f"selections={tmp_path / 'sel.jsonl'}",
        f"inner_pretrained={qwen}", "inner_device=cpu", "inner_device_map=cpu", f"inner_max_num_frames={K}"])
    env = {**os.environ, "FORCE_QWENVL_VIDEO_READER": "decord"}
    done = run_process([sys.executable, "-m", "lmms_eval", "--model", "tspo_select", "--model_args", model_args,
                        "--tasks", "tspo_tiny", "--include_path", root / "task", "--output_path", tmp_path / "out",
                        "--batch_size", "1", "--device", "cpu", "--log_samples"], env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    accuracy = json.loads(results.read_text())["results"]["tspo_tiny"]["accuracy,none"]
    (samples,) = (tmp_path / "out").rglob("*samples_tspo_tiny*.jsonl")  # --log_samples: each answer as given
    logged = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sorted(x["doc_id"] for x in logged) == [0, 1, 2]
    right = [first_text(x["filtered_resps"]).strip()[:1] == docs[x["doc_id"]]["answer"] for x in logged]
    assert accuracy == pytest.approx(sum(right) / len(docs))
    selections = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert sorted(s["doc_id"] for s in selections) == [0, 1, 2]
    assert all(len(s["frame_indices"]) == K for s in selections)


def test_a_missing_video_names_the_document_and_the_reason(tmp_path, lmms_eval_run):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    model = get_model("tspo_select")(inner="qwen2_5_vl", selector=str(build_tspo_layout(tmp_path / "selector")),
                                     num_frames=K, store=str(tmp_path / "store"), clips=str(tmp_path / "clips"),
                                     inner_pretrained=str(build_tiny_qwen2_5_vl(tmp_path / "qwen")),
                                     inner_device="cpu", inner_device_map="cpu")
    model.task_dict = {"t": {"test": [{"video": str(tmp_path / "gone.mp4"), "question": "What?"}]}}
    request = Instance("generate_until", ("What?", {}, lambda d: [d["video"]], 0, "t", "test"), 0,
                       {"task": "t", "doc_id": 0, "repeats": 1})
    with pytest.raises(ValueError, match=r"tspo_select: t document 0: .*gone\.mp4"):
        model.generate_until([request])
