"""The synthetic haystack world: timeline math, question labels against the timeline, and the labels checked in the
decoded pixels of the written videos (the tiny_world fixture: 6 real videos of 60-80 s)."""
import json
import random
from collections import Counter

import numpy as np
import pytest
from helpers.scripts import load_script

main = load_script("pipelines/make_synthetic.py").main

from tspo_ray.data.records import read_records, resolve_video_path
from tspo_ray.synthetic.build import SPLITS, video_seed
from tspo_ray.synthetic.dataset import build_world
from tspo_ray.synthetic.families import load_families
from tspo_ray.synthetic.questions import make_questions
from tspo_ray.synthetic.render import COLOURS
from tspo_ray.synthetic.world import (
    VideoPlan,
    WorldSettings,
    arrange_without_repeats,
    plan_video,
    recurrence_counts,
    snap_boundaries,
)
from tspo_ray.synthetic.writer import frame_at
from tspo_ray.video import frames as video

TINY = dict(seed=7, min_s=60, max_s=80, workers=1, progress=False)


# --- pure: timelines and questions -----------------------------------------------------------------------------

def test_arrange_without_repeats():
    order = arrange_without_repeats({"a": 3, "b": 1, "c": 1}, random.Random(0))
    assert order[0::2] == ["a", "a", "a"] and sorted(order[1::2]) == ["b", "c"]  # the only valid pattern
    for seed in range(50):
        order = arrange_without_repeats({"a": 4, "b": 3, "c": 2, "d": 1}, random.Random(seed))
        assert Counter(order) == {"a": 4, "b": 3, "c": 2, "d": 1} and all(x != y for x, y in zip(order, order[1:]))
    with pytest.raises(ValueError, match="no order"):
        arrange_without_repeats({"a": 3, "b": 1}, random.Random(0))


def test_recurrence_counts_fill_the_slots_within_the_cap():
    for seed in range(20):
        for slots in (5, 9, 12, 21):
            counts = recurrence_counts([f"o{i}" for i in range(20)], slots, random.Random(seed))
            assert sum(counts.values()) == slots and len(counts) >= 5
            assert 1 <= min(counts.values()) and max(counts.values()) <= min(4, slots // 3)
    assert set(recurrence_counts(["a", "b", "c", "d", "e"], 5, random.Random(0)).values()) == {1}  # cap 5 // 3 = 1
    with pytest.raises(ValueError):
        recurrence_counts(["a", "b"], 5, random.Random(0))


def test_snap_boundaries_hand_computed():
    # 8 frames at 2 fps, lengths 1:1:2 -> first frames 0, 2, 4 -> boundaries half-way: 0.75 s and 1.75 s
    assert snap_boundaries([1, 1, 2], 8, 2) == [0.0, 0.75, 1.75, 4.0]
    # tiny segments still get a frame each: first frames 0, 1, 2 of 4
    assert snap_boundaries([0.01, 0.01, 10], 4, 2) == [0.0, 0.25, 0.75, 2.0]
    with pytest.raises(ValueError):
        snap_boundaries([1, 1, 1], 2, 2)

FAMILIES = load_families()


def test_settings_validation():
    with pytest.raises(ValueError, match="too short"):
        WorldSettings(min_s=20, max_s=30)
    with pytest.raises(ValueError, match="shorter than haystack"):
        WorldSettings(needle_min_s=2, needle_max_s=9)
    assert WorldSettings.from_dict({**WorldSettings().to_dict(), "other": 1}) == WorldSettings()


@pytest.fixture(scope="module")
def full_size_plans():
    """200 default-size timelines (2-8 min) with their questions; no video is written."""
    out = []
    for i in range(200):
        rng = random.Random(video_seed(0, "train", i))
        plan = plan_video(f"train-{i:04d}", rng)
        out.append((plan, make_questions(plan, f"videos/train-{i:04d}.mp4", rng, FAMILIES)))
    return out


def test_timeline_invariants(full_size_plans):
    for plan, _ in full_size_plans:
        segs, fps = plan.segments, plan.fps
        assert 120 <= plan.duration_s <= 480 and plan.num_frames == plan.duration_s * fps
        assert segs[0].start_s == 0 and segs[-1].end_s == plan.duration_s
        assert all(a.end_s == b.start_s for a, b in zip(segs, segs[1:]))
        inner = [s.start_s * fps - 0.5 for s in segs[1:]]
        assert all(x == round(x) for x in inner)  # boundaries half-way between frames
        names = [s.name for s in segs]
        assert all(a != b for a, b in zip(names, names[1:]))
        assert all(a.background != b.background for a, b in zip(segs, segs[1:]))
        needles = [i for i, s in enumerate(segs) if s.needle]
        assert len(needles) == 2 and 0 < needles[0] and needles[1] < len(segs) - 1 and needles[1] - needles[0] > 1
        for i in needles:
            assert 2 - 0.5 <= segs[i].end_s - segs[i].start_s <= 6 + 0.5  # snapping moves an end by <= half a frame
            assert [s.shape for s in segs].count(segs[i].shape) == 1
        assert [s.colour for s in segs].count(segs[needles[1]].colour) == 1
        assert [s.colour for s in segs].count(segs[needles[0]].colour) > 1  # needle A's colour is no giveaway
        assert max(Counter(s.name for s in segs if not s.needle).values()) <= 4
        assert len({s.colour for s in segs}) == 6 and len({s.shape for s in segs}) == 6
        assert sum(segs[i].end_s - segs[i].start_s for i in needles) < 0.1 * plan.duration_s
        assert VideoPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def answer_text(r: dict) -> str:
    return r["options"]["ABCD".index(r["answer"])]


def test_questions_are_true_to_the_timeline(full_size_plans):
    """Every question checked against the plan by an independent restatement of what its family asks."""
    offsets = {"after": 1, "before": -1, "two_after": 2, "two_before": -2}
    nth = {"beginning": 0, "second": 1, "third": 2, "end": -1, "second_last": -2}
    for plan, records in full_size_plans:
        segs = plan.segments
        names = [s.name for s in segs]
        per_family = Counter(r["meta"]["family"] for r in records)
        assert {k: per_family[k] for k in ("needle_attribute", "relation", "position", "counting", "second_event",
                                           "third_event", "second_last_event")} == {
            "needle_attribute": 3, "relation": 4, "position": 2, "counting": 3, "second_event": 1, "third_event": 1,
            "second_last_event": 1}
        assert 1 <= per_family["relation_two"] <= 3
        for r in records:
            m, ans, slots = r["meta"], answer_text(r), r["meta"]["slots"]
            assert len(set(r["options"])) == 4 and ans == m["answer_text"] and r["type"] == "needle"
            assert r["target_spans"] == [[segs[i].start_s, segs[i].end_s] for i in m["segments"]]
            if m["form"] == "colour":  # the subject shape is in the target segment only
                (i,) = m["segments"]
                assert [k for k, s in enumerate(segs) if s.shape == slots["shape"]] == [i] and ans == segs[i].colour
                assert segs[i].needle
            elif m["form"] == "shape":
                (i,) = m["segments"]
                assert [k for k, s in enumerate(segs) if s.colour == slots["colour"]] == [i] and ans == segs[i].shape
            elif m["form"] in offsets:
                (a,) = [k for k, n in enumerate(names) if n == f"a {slots['colour']} {slots['shape']}"]
                j = a + offsets[m["form"]]
                assert ans == names[j] and m["segments"] == list(range(min(a, j), max(a, j) + 1))
                assert r["question"].endswith(f"{slots['colour']} {slots['shape']}?")
            elif m["form"] in nth:
                j = nth[m["form"]] % len(segs)
                assert ans == names[j]
                if m["form"] in ("second", "third"):
                    assert m["segments"] == list(range(j + 1))  # every event up to it, from the start
            else:
                occurrences = [k for k, n in enumerate(names) if n == f"a {slots['colour']} {slots['shape']}"]
                assert int(ans) == len(occurrences) and not any(segs[k].needle for k in occurrences)
                assert m["segments"] == sorted(set(occurrences) | {k + 1 for k in occurrences[:-1]})
                assert sorted(r["options"]) == ["1", "2", "3", "4"]
            for option, k in m.get("distractor_segments", {}).items():  # wrong options are visible elsewhere
                assert option != ans and k not in m["answer_segments"]
                shown = {"colour": segs[k].colour, "shape": segs[k].shape}.get(m["form"], names[k])
                assert shown == option


def test_answers_are_balanced(full_size_plans):
    records = [r for _, rs in full_size_plans for r in rs]
    letters = Counter(r["answer"] for r in records)
    assert all(0.2 < letters[x] / len(records) < 0.3 for x in "ABCD")
    counts = Counter(int(r["meta"]["answer_text"]) for r in records if r["meta"]["family"] == "counting")
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 0.15 * sum(counts.values())


# --- the written world ------------------------------------------------------------------------------------------

def colour_fraction(frames: np.ndarray, colour: str) -> np.ndarray:
    """Per frame [..., H, W, 3]: the share of pixels within 40 (per channel) of a COLOURS rgb, i.e. the area of
    the object in that colour (backgrounds are far from every object colour)."""
    near = np.abs(frames.astype(np.int16) - np.array(COLOURS[colour], dtype=np.int16)).max(-1) < 40
    return near.mean(axis=(-2, -1))


def load_split(world, split):
    records, errors = read_records(world / f"{split}.jsonl")
    assert not errors
    plans = {p["video_id"]: VideoPlan.from_dict(p)
             for p in map(json.loads, (world / "plans" / f"{split}.jsonl").read_text().splitlines())}
    return records, plans


@pytest.fixture(scope="module")
def decoded(tiny_world):
    """Every frame of every tiny-world video, decoded by tspo_ray.video.frames: {video_id: uint8 [N, 128, 128, 3]}."""
    out = {}
    for path in sorted((tiny_world / "videos").glob("*.mp4")):
        out[path.stem] = video.read_frames(path, range(video.probe(path).num_frames))
    return out


@pytest.fixture(scope="module")
def area(decoded):
    """{video_id: {colour: [N] share of each frame's pixels in that colour}} (every other pixel: 4x faster, and
    an object covers hundreds of them)."""
    return {vid: {c: colour_fraction(frames[:, ::2, ::2], c) for c in COLOURS} for vid, frames in decoded.items()}


def in_span(n: int, start: float, end: float, fps: int = 2) -> np.ndarray:
    """Boolean mask over n frames: the frames whose time lies in [start, end]."""
    mask = (np.arange(n) / fps >= start) & (np.arange(n) / fps <= end)
    assert mask.any(), (start, end)
    return mask


def test_records_are_valid_and_resolve_to_real_videos(tiny_world):
    for split in SPLITS:
        records, plans = load_split(tiny_world, split)
        # per video: counting 3, needle_attribute 3, position 2, relation 4, relation_two 3 and one of each
        # event-order family (second, third, second-last event)
        assert len(records) == 18 * len(plans) and len(plans) == {"train": 3, "val": 1, "test": 2}[split]
        for r in records:
            path = resolve_video_path(r.video, tiny_world / f"{split}.jsonl")
            assert path == tiny_world / "videos" / f"{r.id.rsplit('-q', 1)[0]}.mp4" and path.is_file()
            assert r.duration_s == plans[path.stem].duration_s and 60 <= r.duration_s <= 80
    manifest = json.loads((tiny_world / "manifest.json").read_text())
    assert manifest["splits"]["train"]["questions"] == 54 and manifest["settings"]["min_s"] == 60
    assert (tiny_world / "quarantine.jsonl").read_text() == ""


def test_decoded_frames_are_the_planned_frames(tiny_world, decoded):
    _, plans = load_split(tiny_world, "train")
    for vid, plan in plans.items():
        frames = decoded[vid]
        assert len(frames) == plan.num_frames
        for k, seg in enumerate(plan.segments):
            i = round((seg.start_s + seg.end_s) / 2 * plan.fps)  # a frame in the middle of the segment
            clean = frame_at(plan, i / plan.fps, 128, None).astype(int)
            err = np.abs(frames[i].astype(int) - clean).mean()
            assert err < 6, (vid, i, err)
            # and unlike the neighbouring segment's frame
            other = plan.segments[k - 1 if k else 1]
            wrong = frame_at(plan, (other.start_s + other.end_s) / 2, 128, None).astype(int)
            assert np.abs(frames[i].astype(int) - wrong).mean() > 3 * err


def test_needle_is_inside_its_span_and_absent_elsewhere(tiny_world, area):
    checked = 0
    for split in SPLITS:
        records, _ = load_split(tiny_world, split)
        for r in records:
            if r.meta["form"] != "shape":  # the needle whose colour is unique to it
                continue
            colour, ((start, end),) = r.meta["slots"]["colour"], r.target_spans
            share = area[r.video.split("/")[-1][:-4]][colour]
            inside = in_span(len(share), start, end)
            assert share[inside].min() > 0.05 and share[~inside].max() < 0.002
            checked += 1
    assert checked == 6


def test_every_target_span_shows_its_object(tiny_world, area):
    for split in SPLITS:
        records, plans = load_split(tiny_world, split)
        for r in records:
            vid = r.video.split("/")[-1][:-4]
            segs, n = plans[vid].segments, plans[vid].num_frames
            for (start, end), k in zip(r.target_spans, r.meta["segments"]):
                assert area[vid][segs[k].colour][in_span(n, start, end)].min() > 0.05, (r.id, k)
            ans = r.options["ABCD".index(r.answer)]
            if r.meta["form"] == "colour":
                assert area[vid][ans][in_span(n, *r.target_spans[0])].min() > 0.05
            if r.meta["form"] == "count":  # the spans hold each appearance and the segment that separates it
                subject = "a {colour} {shape}".format(**r.meta["slots"])
                assert int(ans) == len(r.meta["answer_segments"]) == sum(s.name == subject for s in segs)
                assert all(segs[k].name == subject for k in r.meta["answer_segments"])


def test_distractors_are_visible_in_the_video(tiny_world, area):
    for split in SPLITS:
        records, plans = load_split(tiny_world, split)
        for r in records:
            vid = r.video.split("/")[-1][:-4]
            segs = plans[vid].segments
            witnesses = r.meta.get("distractor_segments", {})
            assert len(witnesses) == (0 if r.meta["form"] == "count" else 3)
            for option, k in witnesses.items():
                seg = segs[k]
                assert option in (seg.colour, seg.shape, seg.name)
                colour = option if option in COLOURS else seg.colour
                assert area[vid][colour][in_span(plans[vid].num_frames, *seg.span)].min() > 0.05


def test_splits_hold_disjoint_videos(tiny_world):
    timelines, seeds, contents = {}, set(), set()
    for split in SPLITS:
        records, plans = load_split(tiny_world, split)
        seeds |= {r.meta["video_seed"] for r in records}
        for vid, plan in plans.items():
            timelines[vid] = tuple((s.shape, s.colour, s.start_s) for s in plan.segments)
            contents.add((tiny_world / "videos" / f"{vid}.mp4").read_bytes())
    assert len(seeds) == len(timelines) == len(set(timelines.values())) == len(contents) == 6
    assert len({video_seed(s, sp, i) for s in range(3) for sp in SPLITS for i in range(100)}) == 900


def test_generation_is_deterministic(tiny_world, tmp_path):
    build_world(tmp_path, {"train": 2}, **TINY)
    assert (tmp_path / "train.jsonl").read_text().splitlines() == \
        (tiny_world / "train.jsonl").read_text().splitlines()[:36]
    for vid in ("train-0000", "train-0001"):
        a = video.read_frames(tmp_path / "videos" / f"{vid}.mp4", [0, 10, 50, 100])
        b = video.read_frames(tiny_world / "videos" / f"{vid}.mp4", [0, 10, 50, 100])
        assert np.array_equal(a, b)
    other = tmp_path / "other"
    build_world(other, {"train": 1}, **{**TINY, "seed": 8})
    assert (other / "train.jsonl").read_text() != (tmp_path / "train.jsonl").read_text()


def test_rebuild_keeps_complete_videos_and_rewrites_bad_ones(tmp_path):
    first = build_world(tmp_path, {"test": 2}, **TINY)
    assert first["videos_written"] == 2
    paths = [tmp_path / "videos" / f"test-000{i}.mp4" for i in range(2)]
    stamps = [p.stat().st_mtime_ns for p in paths]
    again = build_world(tmp_path, {"test": 2}, **TINY)
    assert (again["videos_written"], again["videos_kept"]) == (0, 2)
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    paths[0].write_bytes(paths[0].read_bytes()[:3000])  # an interrupted copy
    fixed = build_world(tmp_path, {"test": 2}, **TINY)
    assert (fixed["videos_written"], fixed["videos_kept"]) == (1, 1)
    assert video.probe(paths[0]).num_frames == json.loads((tmp_path / "plans" / "test.jsonl").read_text()
                                                          .splitlines()[0])["num_frames"]
    assert not list((tmp_path / "videos").glob(".*"))  # no temp files left behind
    assert oct(paths[0].stat().st_mode & 0o777) == "0o644"


def test_a_failing_video_is_quarantined_and_the_rest_goes_on(tmp_path):
    (tmp_path / "videos" / "val-0001.mp4").mkdir(parents=True)  # the file cannot be written there
    manifest = build_world(tmp_path, {"val": 3}, **TINY)
    assert manifest["splits"]["val"]["videos"] == 2 and manifest["splits"]["val"]["failed"] == 1
    (bad,) = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert bad["video"] == "val-0001" and "val-0001.mp4" in bad["reason"]
    records, _ = read_records(tmp_path / "val.jsonl")
    assert {r.video for r in records} == {"videos/val-0000.mp4", "videos/val-0002.mp4"} and len(records) == 36


def test_command_line_prints_the_counts(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--train-videos", "1", "--val-videos", "0", "--test-videos", "1",
                 "--min-seconds", "42", "--max-seconds", "45", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "train       1      0" in out and "test        1      0" in out and "2 videos written" in out
    assert json.loads((tmp_path / "manifest.json").read_text())["splits"]["val"]["questions"] == 0
