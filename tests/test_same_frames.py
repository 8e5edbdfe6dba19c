"""One question of the embedded world through every path that selects frames, with the trained run's checkpoint:
training's own selection (its recorded config's features, select_frames), jobs/evaluate.py, jobs/evaluate.py
--benchmark, the Serve selection core and the lmms-eval plug-in. The selector records its feature spec (the run
trained with 32 candidates per video at 64 px) and every path takes it from there, so all pick the same frames.

The jobs are given the default config (128 candidates): a path that read its own config instead of the checkpoint's
spec would score other candidates, and a control below shows that such a path picks other frames. The slow tier
sends the same question over Serve's HTTP, through lmms-eval's own evaluator and through the evaluate job's CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.lmms_task import write_task
from tspo_ray.checkpoint import load_checkpoint, recommended_checkpoint
from tspo_ray.config import ConfigError, load_config, recorded_config
from tspo_ray.data.records import read_records, resolve_video

K = 4
SELECTOR = "agent"
#: the run's feature spec (tests/conftest.py trained_run: features.max_candidates=32, the default 64 px)
RUN_CAP = 32


@pytest.fixture(scope="module")
def question(tiny_world):
    """The first question of the test split, with its video's absolute path."""
    record = read_records(tiny_world / "test.jsonl")[0][0]
    return record, Path(resolve_video(record, tiny_world))


def training_selection(trained_run, tiny_world, record, store) -> dict:
    """What training selects for it: the split items of the run's recorded config, select_frames with its agent."""
    from tspo_ray.evaluation.accuracy import select_frames
    from tspo_ray.selector import load_selector_agent
    from tspo_ray.splits import prepare_split
    from tspo_ray.video.encoders import load_encoder

    cfg = recorded_config(load_checkpoint(recommended_checkpoint(trained_run)))
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(tiny_world)}),
                                 "features": cfg.features.model_copy(update={"store": str(store)})})
    items, _, _ = prepare_split(cfg, "test", load_encoder(cfg.features.encoder), progress=False)
    (item,) = [it for it in items if it.record.id == record.id]
    agent, mode = load_selector_agent(trained_run)
    return select_frames(item, SELECTOR, K, agent, mode) | {"num_candidates": len(item.frame_indices)}


def evaluate_selection(trained_run, tiny_world, record, out) -> dict:
    """jobs/evaluate.py --split test with the default config: its selections.jsonl row for the question."""
    from tspo_ray.evaluation.split_job import run_evaluation

    cfg = load_config(overrides=[f"data.root={tiny_world}", f"features.store={out}/store", f"eval.num_frames={K}"])
    run_evaluation(cfg, "test", [SELECTOR], out, str(trained_run), progress=False)
    rows = [json.loads(line) for line in (out / "selections.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r["id"] == record.id]
    return row


def lvb_annotations(record, video, path):
    """The question as a LongVideoBench lvb_val.json of one entry."""
    path.write_text(json.dumps([{"id": record.id, "video_path": str(video), "question": record.question,
                                 "candidates": record.options, "correct_choice": record.letters.index(record.answer),
                                 "duration_group": 60}]))
    return path


def benchmark_selection(trained_run, record, video, out) -> dict:
    """jobs/evaluate.py --benchmark longvideobench (features extracted in this process), the default config."""
    from tspo_ray.evaluation.benchmark_job import run_benchmark_job

    out.mkdir(parents=True)
    cfg = load_config(overrides=[f"features.store={out}/store", f"eval.num_frames={K}"])
    annotations = lvb_annotations(record, video, out / "lvb_val.json")
    run_benchmark_job(cfg, "longvideobench", annotations, video.parent, [SELECTOR], out / "run",
                      checkpoint=str(trained_run), progress=False)
    exported = json.loads((out / "run" / "frame_idx" / SELECTOR / "lvb_val.json").read_text())
    (row,) = [json.loads(line) for line in (out / "run" / "partial.jsonl").read_text().splitlines()]
    assert exported[0]["frame_idx"] == [float(i) for i in row["frame_indices"]]  # what lmms-eval adaptations read
    return row


def serve_selection(trained_run, record, video) -> dict:
    """The Serve deployment's selection core (KeyframeService) for a request with no candidate options."""
    from tspo_ray.serve.service import KeyframeService, ServeSettings

    svc = KeyframeService(ServeSettings.load({"checkpoint": str(trained_run), "video_roots": [str(video.parent)]}))
    feats, _, _ = svc.video_features(str(video), *svc.candidate_settings(None, None))
    job = svc.make_job(str(video), feats, svc.text_feature(record.question), SELECTOR, K)
    return svc.select_many([job])[0] | {"num_candidates": len(feats.frame_indices)}


def plugin_selection(trained_run, record, video, store) -> dict:
    """The lmms-eval plug-in's selection (tspo_select's FrameChooser), as it runs for one request."""
    pytest.importorskip("lmms_eval", reason="lmms-eval is the optional group: uv sync --group lmms")
    from tspo_ray.lmms_eval_model import FrameChooser

    return FrameChooser(str(trained_run), K, SELECTOR, store=str(store)).choose(str(video), record.question)


@pytest.fixture(scope="module")
def training_frames(trained_run, tiny_world, question, tmp_path_factory) -> dict:
    return training_selection(trained_run, tiny_world, question[0], tmp_path_factory.mktemp("train_store"))


def test_every_path_picks_the_frames_training_picks(trained_run, tiny_world, question, training_frames, tmp_path):
    record, video = question
    want = training_frames
    assert want["num_candidates"] == RUN_CAP and len(want["frame_indices"]) == K
    got = {"jobs/evaluate.py": evaluate_selection(trained_run, tiny_world, record, tmp_path / "eval"),
           "--benchmark": benchmark_selection(trained_run, record, video, tmp_path / "bench"),
           "serve": serve_selection(trained_run, record, video),
           "lmms-eval plug-in": plugin_selection(trained_run, record, video, tmp_path / "lmms_store")}
    for path, row in got.items():
        assert row["frame_indices"] == want["frame_indices"], path
        assert row["timestamps_s"] == want["timestamps_s"], path
    assert got["serve"]["num_candidates"] == RUN_CAP


def test_a_path_with_its_own_features_would_pick_other_frames(trained_run, question, training_frames):
    """The control: the same selector on the grid the default config asks for (up to 128 candidates, not the run's
    32) picks other frames, so the equality above holds because every path took the run's spec."""
    from tspo_ray.selector import KeyframeSelector

    record, video = question
    sel = KeyframeSelector.from_pretrained(trained_run)
    assert sel.select(video, record.question, K, SELECTOR)["frame_indices"] == training_frames["frame_indices"]
    sel.feature_spec = sel.feature_spec.model_copy(update={"max_candidates": 128})
    own = sel.select(video, record.question, K, SELECTOR)
    assert own["num_candidates"] > RUN_CAP and own["frame_indices"] != training_frames["frame_indices"]


def test_a_setting_that_contradicts_the_selectors_spec_is_refused(trained_run, tiny_world, question, tmp_path):
    from tspo_ray.evaluation.split_job import run_evaluation
    from tspo_ray.serve.service import KeyframeService, ServeSettings

    record, video = question
    cfg = load_config(overrides=[f"data.root={tiny_world}", f"features.store={tmp_path}/s", "features.frame_size=32"])
    with pytest.raises(ConfigError, match=r"features\.frame_size is 32, the selector's is 64: the selector at"):
        run_evaluation(cfg, "test", [SELECTOR], tmp_path / "eval", str(trained_run), progress=False)
    with pytest.raises(ValueError, match=r"serve\.features\.max_candidates is 64, the selector's is 32"):
        KeyframeService(ServeSettings.load({"checkpoint": str(trained_run), "video_roots": [str(video.parent)],
                                            "features": {"max_candidates": 64}}))
    # the same values as the spec, and the encoder's placement, are not a contradiction
    same = load_config(overrides=[f"data.root={tiny_world}", f"features.store={tmp_path}/s",
                                  f"features.max_candidates={RUN_CAP}", "features.encoder.batch_size=7"])
    from tspo_ray.config import with_selector_features
    from tspo_ray.selector import selector_feature_spec

    adopted = with_selector_features(same, selector_feature_spec(trained_run), str(trained_run))
    assert adopted.features.max_candidates == RUN_CAP and adopted.features.encoder.batch_size == 7
    pytest.importorskip("lmms_eval", reason="lmms-eval is the optional group: uv sync --group lmms")
    from tspo_ray.lmms_eval_model import FrameChooser

    with pytest.raises(ValueError, match=r"tspo_select\.fps is 2\.0, the selector's is 1\.0"):
        FrameChooser(str(trained_run), K, fps=2, store=str(tmp_path / "lmms"))


def test_the_spec_travels_with_the_export(trained_run, tmp_path):
    """The tspo-ray layout records the run's spec beside the weights; the TSPO-0.4B layout is read with the
    reference's pipeline (every 1-fps candidate, native size, the folder's CLIP processor), as its other readers do."""
    from tspo_ray.export import export
    from tspo_ray.selector import KeyframeSelector, selector_feature_spec
    from tspo_ray.video.encoders import embedded_clip_dir

    own = tmp_path / "own"
    export(trained_run, embedded_clip_dir(), own, dtype="float32", layout="tspo-ray")
    recorded = json.loads((own / "selector_config.json").read_text())["features"]
    assert recorded == {"fps": 1.0, "max_candidates": RUN_CAP, "min_candidates": None, "frame_size": 64}
    spec = KeyframeSelector.from_pretrained(own).feature_spec
    assert (spec.max_candidates, spec.frame_size, spec.encoder.model) == (RUN_CAP, 64, str(own))
    ref = tmp_path / "ref"
    export(trained_run, embedded_clip_dir(), ref, layout="reference")
    assert "features" not in json.loads((ref / "selector_config.json").read_text())
    spec = selector_feature_spec(ref)
    assert (spec.fps, spec.max_candidates, spec.frame_size) == (1.0, None, None)
    assert spec.encoder.backend == "hf" and spec.encoder.model == str(ref) and spec.encoder.exact_processor


# --- the slow tier: the same question over HTTP, through lmms-eval and through the job's command line ----------------


def test_serve_over_http_picks_the_training_frames(ray_local, trained_run, question, training_frames):
    import httpx
    from ray import serve

    from helpers.ports import free_port
    from tspo_ray.serve.app import build_app

    record, video = question
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"checkpoint": str(trained_run), "video_roots": [str(video.parent)]}),
                  name="same-frames", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            got = http.post("/select", json={"video": video.name, "question": record.question, "num_frames": K,
                                             "method": SELECTOR})
        assert got.status_code == 200, got.text
        assert got.json()["frame_indices"] == training_frames["frame_indices"]
        assert got.json()["num_candidates"] == RUN_CAP
    finally:
        serve.shutdown()


def test_lmms_eval_hands_the_inner_model_the_training_frames(lmms_eval_run, trained_run, question, training_frames,
                                                             tmp_path, monkeypatch):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from helpers.tiny_models import build_tiny_qwen2_5_vl

    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    record, video = question
    task = write_task(tmp_path / "task", [{"video": str(video), "question": record.question,
                                           "options": [f"{l}. {o}" for l, o in zip(record.letters, record.options)],
                                           "answer": record.answer}])
    qwen = build_tiny_qwen2_5_vl(tmp_path / "qwen")
    model = get_model("tspo_select")(
        inner="qwen2_5_vl", selector=str(trained_run), num_frames=K, method=SELECTOR, store=str(tmp_path / "store"),
        clips=str(tmp_path / "clips"), selections=str(tmp_path / "sel.jsonl"), inner_pretrained=str(qwen),
        inner_device="cpu", inner_device_map="cpu", inner_max_num_frames=K, inner_max_pixels=64 * 64,
        inner_min_pixels=28 * 28)
    simple_evaluate(model=model, tasks=["tspo_tiny"], task_manager=TaskManager(include_path=str(task)),
                    batch_size=1, device="cpu")
    (selection,) = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert selection["frame_indices"] == training_frames["frame_indices"]


def test_the_evaluate_command_line_picks_the_training_frames(run_process, trained_run, tiny_world, question,
                                                             training_frames, tmp_path):
    """Both forms of jobs/evaluate.py as typed, the default config, in their own processes."""
    record, video = question
    split = run_process([sys.executable, "jobs/evaluate.py", "--split", "test", "--selectors", SELECTOR,
                         "--checkpoint", trained_run, "--out", tmp_path / "eval", f"data.root={tiny_world}",
                         f"features.store={tmp_path}/store", f"eval.num_frames={K}"], timeout=600)
    assert split.returncode == 0, split.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "selections.jsonl").read_text().splitlines()]
    assert [r["frame_indices"] for r in rows if r["id"] == record.id] == [training_frames["frame_indices"]]
    annotations = lvb_annotations(record, video, tmp_path / "lvb_val.json")
    bench = run_process([sys.executable, "jobs/evaluate.py", "--benchmark", "longvideobench", "--annotations",
                         annotations, "--videos", video.parent, "--selectors", SELECTOR, "--checkpoint", trained_run,
                         "--out", tmp_path / "bench", "--local", f"features.store={tmp_path}/store",
                         f"eval.num_frames={K}"], timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    exported = json.loads((tmp_path / "bench" / "frame_idx" / SELECTOR / "lvb_val.json").read_text())
    assert exported[0]["frame_idx"] == [float(i) for i in training_frames["frame_indices"]]
    refused = run_process([sys.executable, "jobs/evaluate.py", "--split", "test", "--selectors", SELECTOR,
                           "--checkpoint", trained_run, "--out", tmp_path / "eval2", f"data.root={tiny_world}",
                           f"features.store={tmp_path}/store", "features.max_candidates=64"], timeout=600)
    assert refused.returncode != 0 and "features.max_candidates is 64, the selector's is 32" in refused.stderr
