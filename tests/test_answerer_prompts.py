"""Pure parts of the model answerers: the multiple-choice prompt, chat templates, request checks, engine limits
and settings validation. No models, no engines."""
from __future__ import annotations

import pytest

from tspo_ray.answerers import AnswerRequest, build_answerer, prompts
from tspo_ray.answerers.errors import RequestError
from tspo_ray.answerers.inputs import check_request, dedupe, video_metadata
from tspo_ray.answerers.model_io import ConfigError
from tspo_ray.answerers.vllm_answerer import VLLMAnswererConfig, derive_limits, engine_env
from tspo_ray.video.info import VideoInfo


def test_multiple_choice_text_is_the_papers():
    text = prompts.mc_text("  What colour is the star? ", ["red", "blue", "C. green"])
    assert text == ("What colour is the star?\nA. red\nB. blue\nC. green\n"
                    "Answer with the option's letter from the given choices directly.")


def test_time_instruction_lists_the_real_times():
    text = prompts.user_text("Q?", ["x", "y"], duration_s=314.5, timestamps_s=[1.0, 20.25, 300.0])
    assert text.startswith("The video lasts for 314.50 seconds, and 3 frames are sampled from it. These frames are "
                           "located at 1.00s,20.25s,300.00s.Please answer the following questions related to this "
                           "video.\nQ?\nA. x\nB. y\n")
    with pytest.raises(ValueError, match="duration"):
        prompts.user_text("Q?", ["x", "y"], None, [1.0])


def test_qwen_template_renders_video_or_images():
    video = prompts.render(prompts.messages("Q", "video", 3), prompts.QWEN2_5_VL_CHAT_TEMPLATE)
    assert video == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                     "<|vision_start|><|video_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\n")
    images = prompts.render(prompts.messages("Q", "images", 3), prompts.QWEN2_5_VL_CHAT_TEMPLATE)
    assert images.count("<|vision_start|><|image_pad|><|vision_end|>") == 3 and "<|video_pad|>" not in images
    llava = prompts.render(prompts.messages("Q", "images", 2), prompts.LLAVA_VIDEO_CHAT_TEMPLATE)
    assert "<|im_start|>user\n<image>\n<image>\nQ<|im_end|>" in llava
    with pytest.raises(ValueError, match="input_mode"):
        prompts.messages("Q", "audio", 1)


def test_families():
    assert prompts.family_for("qwen2_5_vl").video_metadata and not prompts.family_for("qwen2_5_vl").time_instruction
    assert prompts.family_for("llava_onevision").time_instruction
    with pytest.raises(ValueError, match="model_type 'llama' has no prompt family"):
        prompts.family_for("llama")


def test_request_checks_name_the_request():
    info = VideoInfo("v.mp4", num_frames=100, native_fps=25.0)
    ok = AnswerRequest("q#0", "v.mp4", (0, 25, 50), (0.0, 1.0, 2.0), "Q?", ("a", "b"))
    check_request(ok, info)
    cases = [
        (AnswerRequest("q#1", "v.mp4", (0, 100), (0.0, 4.0), "Q?", ("a", "b")), "q#1: frame indices outside 0..99"),
        (AnswerRequest("q#2", "v.mp4", (50, 25), (2.0, 1.0), "Q?", ("a", "b")), "q#2: frame indices are not in"),
        (AnswerRequest("q#3", "v.mp4", (0, 25), (0.0,), "Q?", ("a", "b")), "q#3: 2 frame indices but 1 timestamps"),
        (AnswerRequest("q#4", "v.mp4", (0, 25), (0.0, 1.1), "Q?", ("a", "b")), "q#4: timestamps_s disagree"),
        (AnswerRequest("q#5", "v.mp4", (), (), "Q?", ("a", "b")), "q#5: no frame indices"),
    ]
    for req, message in cases:
        with pytest.raises(RequestError, match=message):
            check_request(req, info)
    # half a frame of slack (1/50 s at 25 fps) absorbs rounded timestamps
    check_request(AnswerRequest("q#6", "v.mp4", (0, 25), (0.0, 1.019), "Q?", ("a", "b")), info)


def test_video_metadata_gives_real_times_and_mean_rate():
    from tspo_ray.answerers.inputs import hf_metadata

    meta = video_metadata([10, 40, 250], native_fps=25.0, total_frames=500, height=360, width=640)
    assert meta["duration"] == 20.0 and meta["do_sample_frames"] is False
    hf = hf_metadata(meta)
    assert hf.timestamps == [0.4, 1.6, 10.0]
    assert hf.sampled_fps == pytest.approx(3 / 500 * 25.0)  # the selection's mean rate: 3 frames in 20 s


def test_dedupe_keeps_first_of_each_key():
    a = AnswerRequest("k", "v", (0,), (0.0,), "Q?", ("a", "b"))
    b = AnswerRequest("j", "v", (1,), (0.04,), "Q?", ("a", "b"))
    assert dedupe([a, b, a]) == [a, b]


def test_engine_limits_follow_the_largest_request():
    cfg = VLLMAnswererConfig.load({"model": "m", "num_frames": 16, "max_text_tokens": 512, "max_tokens": 8})
    lim = derive_limits(cfg, probe_tokens=1000, frame_hw=(448, 448))
    assert (lim.max_model_len, lim.max_num_batched_tokens, lim.max_num_seqs) == (1520, 8192, 64)
    assert lim.limit_mm_per_prompt == {"video": {"count": 1, "num_frames": 16, "height": 448, "width": 448}, "image": 0}
    fixed = VLLMAnswererConfig.load({"model": "m", "max_model_len": 10000, "input_mode": "images",
                                          "num_frames": 4})
    lim = derive_limits(fixed, probe_tokens=1000, frame_hw=(224, 336))
    assert (lim.max_model_len, lim.max_num_batched_tokens) == (10000, 10000)
    assert lim.limit_mm_per_prompt == {"image": {"count": 4, "height": 224, "width": 336}, "video": 0}


def test_engine_env_on_cpu_and_gpu():
    cfg = VLLMAnswererConfig.load({"model": "m", "kv_cache_space_gib": 2,
                                        "env": {"VLLM_CPU_OMP_THREADS_BIND": "0"}})
    assert engine_env(cfg, on_cpu=True) == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                            "VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert engine_env(cfg, on_cpu=False) == {"VLLM_CPU_OMP_THREADS_BIND": "0"}


@pytest.mark.parametrize("settings,message", [
    ({"model": "m", "max_new_tokens": 4},
     r"answerer.settings.max_new_tokens: unknown vllm answerer option \(known: model,"),
    ({}, r"answerer.settings.model: required"),
    ({"model": "m", "family": "llama"}, r"answerer.settings.family: must be auto or one of"),
    ({"model": "m", "input_mode": "audio"}, r"answerer.settings.input_mode"),
    ({"model": "m", "num_frames": 0}, r"answerer.settings.num_frames"),
    ({"model": "m", "tensor_parallel_size": 2, "num_gpus": 1},
     r"answerer.settings.num_gpus: must be 0 \(CPU\) or cover"),
    ({"model": "m", "gpu_memory_utilization": 1.5}, r"answerer.settings.gpu_memory_utilization"),
    ({"model": "m", "max_model_len": 8}, r"answerer.settings.max_model_len"),
])
def test_vllm_settings_rejected_with_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        VLLMAnswererConfig.load(settings)


def test_factory_merges_mapping_and_keywords():
    # fails on the merged settings before any engine starts: the keyword reached the config
    with pytest.raises(ConfigError, match="answerer.settings.bogus"):
        build_answerer("vllm", {"model": "m"}, bogus=1)
    with pytest.raises(ValueError, match="unknown answerer kind 'sglang'"):
        build_answerer("sglang")
    cfg = VLLMAnswererConfig.load({"model": "m", "num_gpus": 2, "tensor_parallel_size": 2, "num_cpus": 4,
                                        "probe_frame_hw": [360, 640]})
    assert cfg.actor_options() == {"num_cpus": 4, "num_gpus": 2} and cfg.probe_frame_hw == (360, 640)


@pytest.mark.parametrize("name", ["answerer_qwen2_5_vl_7b.yaml", "answerer_llava_video_7b.yaml"])
def test_shipped_answerer_configs_parse(name):
    from pathlib import Path

    from tspo_ray.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    settings = VLLMAnswererConfig.load(cfg.answerer.settings)
    assert cfg.answerer.kind == "vllm" and settings.num_gpus >= settings.tensor_parallel_size >= 1
    assert settings.num_frames >= cfg.eval.num_frames and settings.num_frames >= cfg.policy.num_frames
