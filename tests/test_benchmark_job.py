"""`jobs/evaluate.py --benchmark` end to end on each benchmark's real-format fixture (tests/fixtures/benchmarks): the
fixture's video names point at short MPEG-4 files generated here with PyAV, Ray Data encodes every 1-fps candidate
with a tiny random model in the TSPO-0.4B layout (its CLIP and its selector), the embedded answerer answers, and
the job writes the benchmark's own file back with frame_idx plus the breakdown table."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.scripts import load_script
from helpers.tiny_models import build_tspo_layout
from tspo_ray.data.benchmarks import load

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
#: benchmark -> (annotation file, the reference's selector for it)
CASES = {"longvideobench": ("lvb_val.json", "agent:top-k"), "mlvu": ("mlvu.json", "agent:top-k"),
         "videomme": ("videomme.json", "agent:bin-max"), "lvbench": ("video_info.meta.jsonl", "agent:top-k")}
FPS, SECONDS, K = 4, 20, 4  # 4 fps: the 1-fps grid is every 4th native frame, 20 candidates per clip


def write_clip(path: Path, seed: int) -> Path:
    """An MPEG-4 clip whose picture changes every second (random blocks), so the candidates score differently."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for second in range(SECONDS):
            img = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8)
            for _ in range(FPS):
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Three clips, the TSPO-0.4B-layout model, and one feature store shared by every case (a clip is encoded once)."""
    d = tmp_path_factory.mktemp("bench")
    return {"dir": d, "clips": [write_clip(d / f"clip{i}.mp4", i) for i in range(3)],
            "tspo": build_tspo_layout(d / "tspo04b", seed=1), "store": d / "features"}


def video_folder(bench, name: str, annotations: Path) -> Path:
    """A folder holding every video the fixture names, each a link to one of the generated clips."""
    folder = bench["dir"] / f"videos_{name}"
    folder.mkdir(exist_ok=True)
    for i, video in enumerate(dict.fromkeys(r.video for r in load(name, annotations))):
        if not (folder / video).exists():
            (folder / video).symlink_to(bench["clips"][i % len(bench["clips"])])
    return folder


def overrides(bench):
    """The TSPO-0.4B-layout model's own features (the reference's pipeline: native size through its CLIP processor),
    which the runs with --checkpoint take from the folder anyway and those without it take from here."""
    return [f"features.encoder={{backend: hf, model: {bench['tspo']}, exact_processor: true}}",
            f"features.store={bench['store']}", "features.frame_size=native", "features.workers=1",
            "features.engine=ray", f"eval.num_frames={K}"]


def run_cli(monkeypatch, args):
    evaluate = load_script("jobs/evaluate.py")

    monkeypatch.setattr(sys, "argv", ["evaluate.py", *args])
    evaluate.main()


def exported_questions(name: str, path: Path) -> list[dict]:
    if name == "lvbench":
        return [qa for line in path.read_text().splitlines() for qa in json.loads(line)["qa"]]
    return json.loads(path.read_text())


def expected_accuracy(name: str, rows: list[dict]) -> tuple[float, dict[str, float]]:
    """The breakdown recomputed the plain way: per-group means; MLVU's overall is the mean over tasks."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        for g in r["meta"]["groups"]:
            groups.setdefault(str(g), []).append(r["correct"])
    per = {g: sum(v) / len(v) for g, v in groups.items()}
    overall = sum(per.values()) / len(per) if name == "mlvu" else sum(r["correct"] for r in rows) / len(rows)
    return overall, per


@pytest.mark.parametrize("name", list(CASES))
def test_benchmark_job_end_to_end(name, bench, ray_local, tmp_path, monkeypatch, capsys):
    from tspo_ray.selector import KeyframeSelector
    from tspo_ray.video.frames import decode_candidates

    file, selector = CASES[name]
    annotations = FIXTURES / file
    videos, out = video_folder(bench, name, annotations), tmp_path / "out"
    run_cli(monkeypatch, ["--benchmark", name, "--annotations", str(annotations), "--videos", str(videos),
                          "--selectors", "uniform", selector, "--checkpoint", str(bench["tspo"]), "--out", str(out),
                          "--answer", *overrides(bench)])
    printed = capsys.readouterr().out
    records = load(name, annotations, videos)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["features"]["pipeline"] == "ray" and summary["features"]["failed"] == 0
    rows = {(r["selector"], r["id"]): r for r in map(json.loads, (out / "partial.jsonl").read_text().splitlines())}
    sel = KeyframeSelector.from_pretrained(bench["tspo"])
    for s in ("uniform", selector):
        entry = summary["selectors"][s]
        assert entry["questions"] == entry["exported"] == len(records) and entry["failed"] == []
        assert entry["unmatched"] == 0  # every record id is a question id of the file (LVBench: key + uid)
        exported = exported_questions(name, out / "frame_idx" / s.replace(":", "_") / file)
        assert len(exported) == len(records)
        for rec, question in zip(records, exported):
            picked = rows[(s, rec.id)]["frame_indices"]
            assert question["frame_idx"] == [float(i) for i in sorted(picked)] and len(picked) == K
            assert all(i % FPS == 0 and 0 <= i < FPS * SECONDS for i in picked)  # on the 1-fps grid
        overall, per = expected_accuracy(name, [rows[(s, r.id)] for r in records])
        assert entry["accuracy"] == pytest.approx(overall)
        assert {g: v["accuracy"] for g, v in entry["breakdown"]["groups"].items()} == pytest.approx(per)
    if selector == "agent:top-k":  # the frames are the agent's top K, rescored from pixels by the selector API
        for rec in records:
            frames, cands = decode_candidates(rec.video, 1.0, None, None)
            scores = sel.scores(frames, rec.question)
            chosen = torch.tensor([list(cands.frame_indices).index(i) for i in rows[(selector, rec.id)]["frame_indices"]])
            rest = torch.ones(len(scores), dtype=torch.bool)
            rest[chosen] = False
            assert scores[chosen].min() >= scores[rest].max() - 1e-2
    table = (out / "table.md").read_text()
    head = {"longvideobench": "| selector | questions | overall | 600 |",
            "mlvu": "| selector | questions | M-Avg | ego | needle | plotQA |",
            "videomme": "| selector | questions | overall | short | long |",
            "lvbench": "| selector | questions | overall | event understanding | key information retrieval | "
                       "reasoning | summarization | temporal grounding |"}[name]
    assert table.splitlines()[0] == head and table.strip() in printed
    assert table.splitlines()[3].startswith(f"| {selector} | {len(records)} | ")


def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(bench, tmp_path):
    """Interrupted after two chunks (as Ctrl-C or a kill between chunks would), restarted with the same command: only
    the unfinished questions run, and every output equals the one of a run that was never interrupted."""
    from tspo_ray.config import load_config
    from tspo_ray.evaluation.benchmark_job import run_benchmark_job

    annotations = FIXTURES / "video_info.meta.jsonl"
    videos = video_folder(bench, "lvbench", annotations)
    cfg = load_config(overrides=overrides(bench))
    selectors = ["uniform", "agent:top-k"]
    common = dict(checkpoint=str(bench["tspo"]), answer=True, progress=False, chunk_size=3)
    whole = run_benchmark_job(cfg, "lvbench", annotations, videos, selectors, tmp_path / "whole", **common)

    chunks: list[list[dict]] = []

    def interrupt_after_two(rows):
        chunks.append(rows)
        if len(chunks) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark_job(cfg, "lvbench", annotations, videos, selectors, tmp_path / "cut", on_chunk=interrupt_after_two,
                          **common)
    first = {(r["selector"], r["id"]) for rows in chunks for r in rows}
    assert len(first) == 6 and not (tmp_path / "cut" / "summary.json").exists()
    rest: list[list[dict]] = []
    resumed = run_benchmark_job(cfg, "lvbench", annotations, videos, selectors, tmp_path / "cut",
                                on_chunk=rest.append, **common)
    second = [(r["selector"], r["id"]) for rows in rest for r in rows]
    assert len(second) == 14 - 6 and not first & set(second)  # 7 questions x 2 selectors, none redone
    for s in selectors:
        path = Path("frame_idx") / s.replace(":", "_") / annotations.name
        assert (tmp_path / "cut" / path).read_bytes() == (tmp_path / "whole" / path).read_bytes()
    assert (tmp_path / "cut" / "table.md").read_text() == (tmp_path / "whole" / "table.md").read_text()
    assert resumed["selectors"] == whole["selectors"] | {
        s: {**whole["selectors"][s], "frame_idx_file": resumed["selectors"][s]["frame_idx_file"]} for s in selectors}


def test_tsv_runs_for_accuracy_only_and_is_refused_without_answers(bench, tmp_path, monkeypatch, capsys):
    annotations = FIXTURES / "VideoMME.tsv"
    videos = video_folder(bench, "tsv", annotations)
    args = ["--benchmark", "tsv", "--annotations", str(annotations), "--videos", str(videos), "--selectors", "uniform",
            "--out", str(tmp_path / "out"), *overrides(bench)]
    with pytest.raises(SystemExit, match=r"^error: --benchmark tsv: .*no annotation JSON.*add --answer"):
        run_cli(monkeypatch, args)
    run_cli(monkeypatch, args + ["--answer", "--local"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    entry = summary["selectors"]["uniform"]
    assert entry["frame_idx_file"] is None and not (tmp_path / "out" / "frame_idx").exists()
    assert entry["answered"] == summary["questions"] == len(load("tsv", annotations)) and "uniform" in capsys.readouterr().out


def test_missing_video_and_malformed_file_are_reported_by_record(bench, tmp_path, monkeypatch):
    annotations = FIXTURES / "lvb_val.json"
    videos = tmp_path / "videos"
    videos.mkdir()
    names = list(dict.fromkeys(r.video for r in load("longvideobench", annotations)))
    for name, clip in zip(names[1:], bench["clips"]):  # the first question's video is missing
        (videos / name).symlink_to(clip)
    out = tmp_path / "out"
    run_cli(monkeypatch, ["--benchmark", "longvideobench", "--annotations", str(annotations), "--videos", str(videos),
                          "--selectors", "uniform", "--out", str(out), "--local", *overrides(bench)])
    entry = json.loads((out / "summary.json").read_text())["selectors"]["uniform"]
    assert entry["exported"] == 2 and entry["empty"] == 1 and len(entry["failed"]) == 1
    assert entry["failed"][0].startswith("86CxyhFV9MI_0: ") and "86CxyhFV9MI.mp4" in entry["failed"][0]
    assert json.loads((out / "frame_idx" / "uniform" / "lvb_val.json").read_text())[0]["frame_idx"] == []
    bad = tmp_path / "lvb_val.json"
    bad.write_text(json.dumps([{**json.loads(annotations.read_text())[0], "correct_choice": 9}]))
    with pytest.raises(SystemExit, match=r"^error: .*lvb_val.json \[record 0\] \(id='86CxyhFV9MI_0'\): "
                                         r"'correct_choice' = 9"):
        run_cli(monkeypatch, ["--benchmark", "longvideobench", "--annotations", str(bad), "--out", str(tmp_path / "o2"),
                              "--local", *overrides(bench)])
