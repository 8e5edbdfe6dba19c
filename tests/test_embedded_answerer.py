"""The embedded answerer: its reasoning rules on hand-made labels, and the real thing (decord + shipped tiny CLIP)
on a tiny generated world."""
import json

import numpy as np
import pytest

from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.answerers.embedded import EmbeddedAnswerer, decide, nearest_count, option_index, perceive
from tspo_ray.answerers.frame_sets import frame_set, gold_indices, request_for
from tspo_ray.data.records import read_records
from tspo_ray.method.selection_methods import spread
from tspo_ray.synthetic.families import FamilyGrammar, load_families
from tspo_ray.video.info import VideoError

RED_STAR, BLUE_CIRCLE, GREEN_SQUARE = ("red", "star"), ("blue", "circle"), ("green", "square")
EDGES = dict(edge_s=6, edge_fraction=0.05, event_gap_s=20)
GRAMMAR = FamilyGrammar(load_families())


# --- pure reasoning -------------------------------------------------------------------------------------------

def test_every_shipped_wording_reads_as_its_own_program():
    for fam in GRAMMAR.families:
        for variant in fam.variants:
            for wording in variant.wordings:
                slots = {"colour": "orange", "shape": "diamond"}
                parsed = GRAMMAR.parse(wording.format(**slots).upper())  # case is not part of the wording
                assert (parsed.family.name, parsed.variant.form) == (fam.name, variant.form)
                assert parsed.slots == {k: v for k, v in slots.items() if k in variant.slots}
    assert GRAMMAR.parse("Why is the sky blue?") is None


def test_perceived_events_by_hand():
    t = [0.0, 5, 10, 15, 20, 25]
    tl = perceive([RED_STAR, RED_STAR, BLUE_CIRCLE, RED_STAR, BLUE_CIRCLE, RED_STAR], t, 30.0, **EDGES)
    assert [(e.colour, e.shape) for e in tl.events] == [RED_STAR, BLUE_CIRCLE, RED_STAR, BLUE_CIRCLE, RED_STAR]
    assert tl.events[0].weight == 2 and tl.frame_event == [0, 0, 1, 2, 3, 4]
    # the same object in two frames far apart: two events with an unseen one between them
    far = perceive([RED_STAR, RED_STAR], [10.0, 95.0], 100.0, **EDGES)
    assert [e.colour for e in far.events] == ["red", None, "red"]
    assert len(perceive([RED_STAR, RED_STAR], [10.0, 25.0], 100.0, **EDGES).events) == 1
    # edges and fractions need a frame near them: max(6 s, 5% of 200 s = 10 s)
    tl = perceive([BLUE_CIRCLE, RED_STAR, GREEN_SQUARE], [3.0, 95.0, 197.0], 200.0, **EDGES)
    assert tl.starts_at_video_start() and tl.ends_at_video_end() and tl.event_at(0.5) == 1
    assert tl.event_at(0.25) is None  # 50 s: the nearest frame (3 s or 95 s) is more than 10 s away
    late = perceive([BLUE_CIRCLE, RED_STAR], [12.0, 150.0], 200.0, **EDGES)
    assert not late.starts_at_video_start() and not late.ends_at_video_end()
    assert option_index(["a Red  star", "a blue circle"], "a red star") == 0
    assert option_index(["x"], None) is None
    assert nearest_count(["4", "2", "5", "1"], 3) == 1  # 2 and 4 tie: the smaller
    assert nearest_count(["red", "blue"], 3) is None


def test_decide_each_family():
    labels, times = [BLUE_CIRCLE, RED_STAR, RED_STAR, GREEN_SQUARE, BLUE_CIRCLE, RED_STAR], [2.0, 20, 25, 40, 60, 125]
    tl = perceive(labels, times, 130.0, **EDGES)  # events: circle, star, square, circle, star

    def ask(question, options):
        return decide(GRAMMAR.parse(question), tl, options)

    assert ask("What colour is the star?", ["blue", "red"]).index == 1
    assert ask("What shape is the green object?", ["star", "square"]).index == 1
    assert ask("What appears right after the green square?", ["a red star", "a blue circle"]).index == 1
    assert ask("What appears right before the green square?", ["a red star", "a blue circle"]).index == 0
    assert ask("What appears right after what appears right after the green square?",
               ["a red star", "a blue circle"]).index == 0
    assert ask("What appears right before what appears right before the green square?",
               ["a red star", "a blue circle"]).index == 1
    assert ask("What is shown at the beginning of the video?", ["a red star", "a blue circle"]).index == 1
    assert ask("What is shown at the end of the video?", ["a red star", "a blue circle"]).index == 0
    assert ask("What is shown right after the beginning of the video?", ["a green square", "a red star"]).index == 1
    assert ask("What is shown right after what is shown right after the beginning of the video?",
               ["a green square", "a red star"]).index == 0
    assert ask("What is shown right before the end of the video?", ["a red star", "a blue circle"]).index == 1
    cnt = ask("How many times does a red star appear?", ["1", "2", "3"])
    assert cnt.index == 1 and cnt.evidence
    # without evidence: no index (CLIP's best guess follows), with the statement a frame would show
    unseen = ask("What colour is the cross?", ["blue", "red"])
    assert unseen.index is None and not unseen.evidence and unseen.statement("blue") == "a blue cross"
    edge = ask("What appears right after the red star?", ["a green square"])  # the last star has nothing after it
    assert edge.index is None and not edge.evidence
    assert ask("How many times does a yellow cross appear?", ["1", "2"]).index == 0  # unseen: the smallest count
    assert decide(None, tl, ["a", "b"]).index is None


def test_frame_set_helpers_by_hand():
    assert spread(3, 8).tolist() == [0, 1, 2]
    assert spread(16, 4).tolist() == [2, 6, 10, 14]
    # 2 fps, spans [1, 2] and [5, 5.5]: frames 2, 3, 4 and 10, 11 are inside
    assert gold_indices([[1, 2], [5, 5.5]], 20, 2.0, 8).tolist() == [2, 3, 4, 10, 11]
    assert gold_indices([[1, 2], [5, 5.5]], 20, 2.0, 2).tolist() == [3, 11]  # each span's centre first
    # a short span (a needle) among long ones still gets a frame: 3 spans, 3 frames
    assert gold_indices([[0, 10], [10.5, 11], [11.5, 30]], 61, 2.0, 3).tolist() == [10, 22, 42]


# --- the real answerer on a tiny world -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def answerer():
    return EmbeddedAnswerer()


@pytest.fixture(scope="module")
def world_records(tiny_world):
    records = []
    for split in ("train", "val", "test"):
        rows, errors = read_records(tiny_world / f"{split}.jsonl")
        assert not errors
        records += rows
    return records


def plans_by_video(world):
    plans = {}
    for split in ("train", "val", "test"):
        for line in (world / "plans" / f"{split}.jsonl").read_text().splitlines():
            p = json.loads(line)
            plans[f"videos/{p['video_id']}.mp4"] = p
    return plans


def test_contract_order_keys_options_and_one_frame(answerer, world_records, tiny_world):
    recs = world_records[:5]
    reqs = [request_for(r, tiny_world / r.video, m) for r in recs for m in ("uniform", "gold")]
    one = AnswerRequest("single", str(tiny_world / recs[0].video), (3,), (1.5,), recs[0].question,
                        tuple(recs[0].options), recs[0].duration_s)
    out = answerer.answer(reqs + [one])
    assert [a.key for a in out] == [r.key for r in reqs] + ["single"]
    for a, r in zip(out, reqs + [one]):
        assert a.text in "ABCD"[: len(r.options)] and a.option == a.text
        assert len(a.extra["labels"]) == len(r.frame_indices)
    assert answerer.answer([]) == []
    # batching changes nothing: the same request alone gives the same answer
    assert answerer.answer(reqs[3:4])[0] == out[3]


def test_contract_through_the_factory_with_any_encoder(world_records, tiny_world, tiny_hf_clip):
    """A randomly initialised CLIP behind build_answerer: answers are still valid letters, in order."""
    from tspo_ray.answerers import build_answerer

    rand = build_answerer("embedded", {"encoder": {"backend": "hf", "model": tiny_hf_clip}})
    assert rand.name.startswith("embedded:hf:")
    reqs = [request_for(r, tiny_world / r.video, "random") for r in world_records[:6]]
    out = rand.answer(reqs)
    assert [a.key for a in out] == [r.key for r in reqs]
    assert all(a.option in "ABCD"[: len(r.options)] and a.text == a.option for a, r in zip(out, reqs))


def test_bad_video_and_bad_request_are_named(answerer, world_records, tiny_world, tmp_path):
    r = world_records[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    req = AnswerRequest("k", str(broken), (0,), (0.0,), "What colour is the star?", ("red", "blue"), 10.0)
    with pytest.raises(VideoError, match="broken.mp4"):
        answerer.answer([req])
    good = request_for(r, tiny_world / r.video, "uniform")
    bad = AnswerRequest("q-bad#0", str(tiny_world / "videos" / "missing.mp4"), (0, 1), (0.0, 0.5), r.question,
                        tuple(r.options), r.duration_s)
    with pytest.raises(VideoError, match=r"missing\.mp4.*q-bad#0"):
        answerer.answer([good, bad])
    with pytest.raises(ValueError, match="q-short"):
        answerer.answer([AnswerRequest("q-short", good.video, (0, 1), (0.0,), r.question, tuple(r.options))])


def test_gold_frames_answer_needle_questions(answerer, world_records, tiny_world):
    needles = [r for r in world_records if r.family == "needle_attribute"]
    assert len(needles) >= 8
    out = answerer.answer([request_for(r, tiny_world / r.video, "gold") for r in needles])
    right = [a.option == r.answer for a, r in zip(out, needles)]
    assert all(a.extra["evidence"] for a in out)
    assert np.mean(right) >= 0.9, [(r.question, r.options, r.answer, a.extra) for a, r in zip(out, needles)]


def test_without_the_needle_it_does_not_know(answerer, world_records, tiny_world):
    """Frames that never show the needle: the answerer finds no evidence and labels no frame with it."""
    plans = plans_by_video(tiny_world)
    needles = [r for r in world_records if r.family == "needle_attribute"]
    reqs = []
    for r in needles:
        idx, ts = frame_set(r, tiny_world / r.video, "uniform", k=16)
        (start, end), = r.target_spans
        keep = [(i, t) for i, t in zip(idx, ts) if not start - 1 <= t <= end + 1]
        reqs.append(AnswerRequest(r.id, str(tiny_world / r.video), tuple(int(i) for i, _ in keep),
                                  tuple(float(t) for _, t in keep), r.question, tuple(r.options), r.duration_s))
    out = answerer.answer(reqs)
    for a, r in zip(out, needles):
        needle = next(s for s in plans[r.video]["segments"] if s["needle"] and r.target_spans[0][0] == s["start_s"])
        assert not a.extra["evidence"], (r.question, a.extra)
        assert f"{needle['colour']} {needle['shape']}" not in a.extra["labels"]


def test_frame_features_are_cached_and_a_rewritten_video_is_not_stale(world_records, tiny_world, tmp_path):
    import shutil

    answerer = EmbeddedAnswerer(max_cached_frames=40)
    a, b = world_records[0], next(r for r in world_records if r.video != world_records[0].video)
    path = tmp_path / "clip.mp4"
    shutil.copy(tiny_world / a.video, path)
    req = request_for(a, path, "uniform")
    first = answerer.answer([req])[0]
    cached = dict(answerer._frames)
    assert len(cached) == len(set(req.frame_indices))
    assert answerer.answer([req])[0] == first and answerer._frames.keys() == cached.keys()  # served from the cache
    shutil.copy(tiny_world / b.video, path)  # another video under the same name: new features
    answerer.answer([AnswerRequest("again", str(path), req.frame_indices[:2], req.timestamps_s[:2], a.question,
                                   tuple(a.options), a.duration_s)])
    assert len(answerer._frames) == len(cached) + 2
    fresh = EmbeddedAnswerer(answerer.encoder).answer([request_for(a, tiny_world / a.video, "random", k=30)])
    assert len(fresh) == 1
    bounded = EmbeddedAnswerer(answerer.encoder, max_cached_frames=10)
    bounded.answer([request_for(a, tiny_world / a.video, "random", k=30)])
    assert len(bounded._frames) == 10
