"""The generator's labels are true in the pixels of the written videos."""
import json

import numpy as np
import pytest

from tspo_ray import video
from tspo_ray.data.records import read_records
from tspo_ray.synthetic.render import COLOURS


def colour_fraction(frame: np.ndarray, colour: str) -> float:
    rgb = np.array(COLOURS[colour])
    return float((np.abs(frame.astype(int) - rgb).max(-1) < 40).mean())


def load(world, split):
    records, errors = read_records(world / f"{split}.jsonl")
    plans = {p["video_id"]: p for p in map(json.loads, (world / "plans" / f"{split}.jsonl").read_text().splitlines())}
    return records, plans, errors


def frames_at(world, record, times):
    path = world / record.video
    info = video.probe(path)
    idx = [min(int(round(t * info.native_fps)), info.num_frames - 1) for t in times]
    return video.read_frames(path, idx)


def test_records_are_valid_and_splits_disjoint(tiny_world):
    seen = {}
    for split in ("train", "val", "test"):
        records, plans, errors = load(tiny_world, split)
        assert not errors and records
        for r in records:
            assert len(r.options) == 4 and r.answer in "ABCD" and r.target_spans
            assert r.family in ("needle_attribute", "relation", "position", "counting")
            assert 60 <= r.duration_s <= 80.5
        seen[split] = {r.video for r in records}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_needle_is_inside_its_span_and_absent_elsewhere(tiny_world):
    records, plans, _ = load(tiny_world, "train")
    checked = 0
    for r in records:
        if r.family != "needle_attribute" or not r.question.startswith("What shape"):
            continue
        colour = r.question.split(" ")[4]  # the needle's colour is unique to it
        (start, end), = r.target_spans
        inside = frames_at(tiny_world, r, [start + 0.5, (start + end) / 2])
        assert all(colour_fraction(f, colour) > 0.03 for f in inside)
        duration = r.duration_s
        outside_t = [t for t in np.arange(0.5, duration - 0.5, 2.0) if not start - 1 <= t <= end + 1]
        outside = frames_at(tiny_world, r, outside_t)
        assert max(colour_fraction(f, colour) for f in outside) < 0.005
        checked += 1
    assert checked >= 3


def test_counting_and_relation_answers_match_the_timeline(tiny_world):
    records, plans, _ = load(tiny_world, "test")
    for r in records:
        segs = plans[r.video.split("/")[-1][:-4]]["segments"]
        names = [f"a {s['colour']} {s['shape']}" for s in segs]
        answer = r.options[ord(r.answer) - 65]
        if r.family == "counting":
            target = "a " + " ".join(r.question.split(" ")[5:7])
            assert int(answer) == names.count(target) == len(r.target_spans)
        if r.family == "relation":
            words = r.question.rstrip("?").split(" ")
            anchor = names.index(f"a {words[-2]} {words[-1]}")
            assert answer == names[anchor + 1 if words[3] == "after" else anchor - 1]
        if r.family in ("relation", "position"):
            for opt in r.options:
                assert opt in names  # every option is visible somewhere in the video


def test_generation_is_deterministic(tiny_world, tmp_path):
    from make_synthetic import build_world

    build_world(tmp_path, {"train": 3, "val": 1, "test": 2}, seed=7, min_s=60, max_s=80, workers=1, progress=False)
    assert (tmp_path / "train.jsonl").read_text() == (tiny_world / "train.jsonl").read_text()
    a = video.read_frames(tmp_path / "videos" / "train-0001.mp4", [0, 10, 50])
    b = video.read_frames(tiny_world / "videos" / "train-0001.mp4", [0, 10, 50])
    assert np.array_equal(a, b)
