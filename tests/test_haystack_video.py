"""Frames from several files, on the real videos of a tiny world: the embedded answerer sees exactly the frames of
the right files (checked against the world's own timelines and against decoding each frame alone), the model back
ends' inputs hold the right pixels with a clip's metadata, and a haystack of real features is answered and
rewarded end to end."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tspo_ray.answerers import prompts
from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.answerers.embedded import OBJECTS, EmbeddedAnswerer
from tspo_ray.answerers.inputs import COMPOSITE_FPS, PromptStyle, prepare
from tspo_ray.data import haystack
from tspo_ray.training import scoring
from tspo_ray.video.frames import read_frames


@pytest.fixture(scope="module")
def answerer():
    return EmbeddedAnswerer()


@pytest.fixture(scope="module")
def plans(tiny_world):
    out = {}
    for line in (tiny_world / "plans" / "train.jsonl").read_text().splitlines():
        p = json.loads(line)
        out[str(tiny_world / "videos" / f"{p['video_id']}.mp4")] = p
    return out


def object_at(plan: dict, t: float) -> str:
    seg = next(s for s in plan["segments"] if s["start_s"] <= t < s["end_s"])
    return f"{seg['colour']} {seg['shape']}"


def labels_alone(answerer, videos, indices) -> list[str]:
    """Each frame decoded on its own from its file and labelled like the answerer does: the independent reading."""
    frames = np.concatenate([read_frames(v, [i], answerer.frame_size) for v, i in zip(videos, indices)])
    feats = F.normalize(answerer.encoder.encode_frames(frames), dim=-1)
    return [" ".join(OBJECTS[k]) for k in (feats @ answerer.object_text.T).argmax(-1).tolist()]


def mid_segment_frames(plan: dict, how_many: int, skip: int) -> list[int]:
    """Native indices in the middle of `how_many` haystack segments, from the `skip`-th on."""
    segs = [s for s in plan["segments"] if not s["needle"]][skip:][:how_many]
    return [int(round((s["start_s"] + s["end_s"]) / 2 * plan["fps"])) for s in segs]


def test_embedded_answerer_decodes_each_frame_from_its_own_file(answerer, plans):
    paths = sorted(plans)
    assert len(paths) == 3
    videos, indices = [], []
    for k in range(3):  # interleave the files: a, b, c, a, b, c
        for n, path in enumerate(paths):
            videos.append(path)
            indices.append(mid_segment_frames(plans[path], 3, n)[k])
    truth = [object_at(plans[v], i / plans[v]["fps"]) for v, i in zip(videos, indices)]
    req = AnswerRequest("mix#0", paths[0], tuple(indices), tuple(float(t) for t in range(len(indices))),
                        "What colour is the star?", ("red", "blue"), float(len(indices)), frame_videos=tuple(videos))
    got = answerer.answer([req])[0].extra["labels"]
    assert got == labels_alone(answerer, videos, indices)
    # against the timelines: colours are read almost perfectly by the tiny CLIP, shapes nearly so
    assert [g.split()[0] for g in got] == [t.split()[0] for t in truth]
    assert np.mean([g == t for g, t in zip(got, truth)]) >= 0.75
    # the same indices read from one file are other frames: the sources are what makes the labels right
    one_file = AnswerRequest("one#0", paths[0], tuple(sorted(indices)), tuple(i / 2 for i in sorted(indices)),
                             req.question, req.options, None)
    read_as_one = answerer.answer([one_file])[0].extra["labels"]
    assert read_as_one == labels_alone(answerer, [paths[0]] * len(indices), sorted(indices))
    assert [g.split()[0] for g in read_as_one] != [truth[indices.index(i)].split()[0] for i in sorted(indices)]
    with pytest.raises(ValueError, match="one file per frame"):
        answerer.answer([AnswerRequest("bad#0", paths[0], (0, 1), (0.0, 1.0), "Q?", ("a", "b"),
                                       frame_videos=(paths[0],))])


def test_model_inputs_hold_each_files_pixels_with_clip_metadata(plans, tmp_path):
    paths = sorted(plans)
    style = PromptStyle(prompts.FAMILIES["qwen2_5_vl"].chat_template, "video", True, True)
    videos, indices = (paths[1], paths[0], paths[2], paths[1]), (40, 3, 17, 90)
    mixed = AnswerRequest("mix#0", paths[0], indices, (0.0, 3.0, 4.0, 9.0), "What colour is the star?",
                          ("red", "blue"), 12.0, frame_videos=videos)
    plain = AnswerRequest("plain#0", paths[2], (0, 2, 4), (0.0, 1.0, 2.0), "Q?", ("a", "b"), None)
    too_far = AnswerRequest("far#0", paths[0], (3, 10**6), (0.0, 1.0), "Q?", ("a", "b"), None,
                            frame_videos=(paths[0], paths[1]))
    missing = AnswerRequest("gone#0", paths[0], (3, 4), (0.0, 1.0), "Q?", ("a", "b"), None,
                            frame_videos=(paths[0], str(tmp_path / "missing.mp4")))
    backwards = AnswerRequest("back#0", paths[0], (3, 4), (2.0, 1.0), "Q?", ("a", "b"), None,
                              frame_videos=(paths[0], paths[1]))
    ready, failed = prepare([mixed, too_far, plain, missing, backwards], style, frame_size=64)
    assert [p.key for p in ready] == ["mix#0", "plain#0"]
    assert "frame index 1000000 outside" in failed["far#0"] and paths[1] in failed["far#0"]
    assert "missing.mp4" in failed["gone#0"] and "in order" in failed["back#0"]
    want = np.concatenate([read_frames(v, [i], 64) for v, i in zip(videos, indices)])
    assert np.array_equal(ready[0].frames, want)
    meta = ready[0].metadata
    assert meta["fps"] == COMPOSITE_FPS and meta["frames_indices"] == [0, 3, 4, 9] and meta["duration"] == 12.0
    assert "0.00s,3.00s,4.00s,9.00s" in ready[0].prompt and "lasts for 12.00 seconds" in ready[0].prompt
    assert ready[1].metadata["fps"] == pytest.approx(plans[paths[2]]["fps"])  # a plain request keeps its video's


@pytest.fixture(scope="module")
def world_items(tiny_world, tmp_path_factory):
    from tspo_ray.config import load_config
    from tspo_ray.splits import prepare_split
    from tspo_ray.video.encoders import load_encoder

    store = tmp_path_factory.mktemp("features")
    cfg = load_config(overrides=[f"data.root={tiny_world}", f"features.store={store}"])
    items, problems, _ = prepare_split(cfg, "train", load_encoder(cfg.features.encoder), progress=False)
    assert not problems and len({it.video_path for it in items}) == 3
    return items


def test_a_haystack_of_real_features_is_answered_from_its_sources(world_items, answerer):
    needles = [it for it in world_items if it.record.family == "needle_attribute"]
    for seed in range(20):  # a haystack whose target chunks hold the needle
        h = haystack.haystack_items(needles[:1], world_items, seed, 1.0)[0]
        (start, end), = h.record.target_spans
        inside = np.flatnonzero(h.target_mask & (h.timestamps_s >= start) & (h.timestamps_s <= end))
        if len(inside):
            break
    assert len(inside), "no seed put the needle into a target chunk"
    n = min(4, len(inside))
    others = np.flatnonzero(~h.target_mask)[::97][:n]
    assert all(h.frame_videos[p] == h.video_path for p in inside) and all(h.frame_videos[p] != h.video_path
                                                                         for p in others)
    mixed, pure = torch.tensor([list(inside[:n]) + list(others)]), torch.tensor([list(inside[:n])])
    reward = scoring.reward_fn(answerer)
    for draws, r_t in ((mixed, 0.5), (pure, 1.0)):
        pos = sorted(draws[0].tolist())
        files = [h.frame_videos[p] for p in pos]
        answer = answerer.answer(scoring.score_job(h, draws).requests())[0]
        assert answer.extra["labels"] == labels_alone(answerer, files, [int(h.frame_indices[p]) for p in pos])
        result = reward(h, draws)
        assert result.r_temporal.tolist() == pytest.approx([r_t])
        assert result.rewards.tolist() == pytest.approx((result.r_answer + result.r_temporal).tolist())
    assert reward(h, pure).r_answer.tolist() == [1.0]  # the needle's own frames answer it


def test_a_transformers_model_answers_frames_from_two_files(tmp_path):
    """The HF back end (tiny random Qwen2.5-VL) takes a clip of two files of different sizes like a plain video."""
    import sys
    from pathlib import Path

    from helpers.tiny_models import build_tiny_qwen2_5_vl, write_ramp_video

    from tspo_ray.answerers import build_answerer

    small = str(write_ramp_video(tmp_path / "small.mp4", num_frames=20, size=64))
    large = str(write_ramp_video(tmp_path / "large.mp4", num_frames=20, size=96))
    qwen = build_answerer("hf", model=str(build_tiny_qwen2_5_vl(tmp_path / "qwen")), num_frames=8, max_tokens=4,
                          dtype="float32")
    options = ("red", "blue", "green", "yellow")
    clip = AnswerRequest("clip#0", small, (0, 5, 7, 12), (0.0, 1.0, 2.0, 3.0), "What colour is the star?", options,
                         4.0, frame_videos=(small, large, small, large))
    plain = AnswerRequest("plain#0", small, (0, 2, 4, 6), (0.0, 1.0, 2.0, 3.0), "What colour is the star?", options)
    clip_answer, plain_answer = qwen.answer([clip, plain])
    assert "error" not in clip_answer.extra and clip_answer.extra["num_frames"] == 4
    assert clip_answer.extra["prompt_tokens"] == plain_answer.extra["prompt_tokens"]  # resized to the first frame's
