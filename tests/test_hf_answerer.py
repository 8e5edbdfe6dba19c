"""The transformers answerer (tiny random Qwen2.5-VL and a converted tiny LLaVA-Video) and the LLaVA-Video
conversion (a fake checkpoint in the released LlavaQwen layout -> LLaVA-OneVision, loaded by transformers)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers.scripts import load_script
from helpers.tiny_models import build_fake_llava_qwen, build_tiny_qwen2_5_vl, fake_llava_qwen_state_dict, write_ramp_video

from tspo_ray.answerers import (  # noqa: E402
    AnswerRequest,
    build_answerer,
    prompts,  # noqa: E402
)
from tspo_ray.method.rewards import parse_option

_conversion = load_script("pipelines/convert_llava_video.py")
ConversionError, convert, convert_key = _conversion.ConversionError, _conversion.convert, _conversion.convert_key

OPTIONS = ("red", "blue", "green", "yellow")


def request(key, video, idx, question="What colour is the star?"):
    return AnswerRequest(key, video, tuple(idx), tuple(i / 2 for i in idx), question, OPTIONS)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return str(write_ramp_video(tmp_path_factory.mktemp("video") / "ramp.mp4", num_frames=20, fps=2))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen"))
    return build_answerer("hf", model=str(path), num_frames=8, max_tokens=4, dtype="float32")


@pytest.fixture(scope="module")
def llava_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    src = build_fake_llava_qwen(root / "src")
    return src, convert(src, root / "ov", vision_heads=1, progress=False)


def test_key_mapping_of_the_released_layout():
    assert (convert_key("model.layers.3.self_attn.q_proj.weight")
            == "language_model.model.layers.3.self_attn.q_proj.weight")
    assert convert_key("model.embed_tokens.weight") == "language_model.model.embed_tokens.weight"
    assert convert_key("model.norm.weight") == "language_model.model.norm.weight"
    assert convert_key("lm_head.weight") == "language_model.lm_head.weight"
    assert (convert_key("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias")
            == "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias")
    assert convert_key("model.mm_projector.0.weight") == "multi_modal_projector.linear_1.weight"
    assert convert_key("model.mm_projector.2.bias") == "multi_modal_projector.linear_2.bias"
    assert convert_key("model.image_newline") == "image_newline"
    assert convert_key("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert convert_key("model.vision_tower.vision_tower.vision_model.head.mlp.fc1.weight") is None
    with pytest.raises(ConversionError, match="model.vision_resampler.proj.weight"):
        convert_key("model.vision_resampler.proj.weight")


def test_converted_model_loads_with_the_source_weights(llava_dirs):
    from transformers import LlavaOnevisionForConditionalGeneration

    src, out = llava_dirs
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".ov.")]  # no temp folder left behind
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(out)
    loaded, source = model.state_dict(), fake_llava_qwen_state_dict()
    assert len(loaded) == len(source)  # every parameter came from the checkpoint, nothing left random
    # Names inside transformers 5 (hand-written): language_model under model., the SigLIP tower without its
    # vision_model prefix, the projector's Sequential(0, GELU, 2) as linear_1/linear_2.
    inside = {"model.layers.1.self_attn.k_proj.bias": "model.language_model.layers.1.self_attn.k_proj.bias",
              "model.embed_tokens.weight": "model.language_model.embed_tokens.weight",
              "lm_head.weight": "lm_head.weight",
              "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight":
                  "model.vision_tower.embeddings.patch_embedding.weight",
              "model.vision_tower.vision_tower.vision_model.encoder.layers.1.self_attn.out_proj.weight":
                  "model.vision_tower.encoder.layers.1.self_attn.out_proj.weight",
              "model.mm_projector.0.weight": "model.multi_modal_projector.linear_1.weight",
              "model.mm_projector.2.bias": "model.multi_modal_projector.linear_2.bias",
              "model.image_newline": "model.image_newline"}
    for src_key, key in inside.items():
        assert torch.equal(loaded[key], source[src_key]), key
    assert sorted(round(float(v.double().sum()), 4) for v in loaded.values()) == \
        sorted(round(float(v.double().sum()), 4) for v in source.values())
    cfg = model.config
    vision = cfg.vision_config
    assert (vision.num_hidden_layers, vision.image_size, vision.patch_size) == (2, 56, 14)
    assert cfg.vision_feature_layer == -1 and cfg.vision_feature_select_strategy == "full"
    src_cfg = json.loads((src / "config.json").read_text())
    assert cfg.text_config.num_key_value_heads == src_cfg["num_key_value_heads"] == 1


def test_conversion_rejects_other_checkpoints(tmp_path, llava_dirs):
    src, _ = llava_dirs
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["Qwen2ForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="no model.safetensors"):
        convert(bad, tmp_path / "out", vision_heads=1, progress=False)
    for f in src.iterdir():
        if f.suffix in (".safetensors",) or f.name.endswith(".index.json") or f.name.startswith("tokenizer"):
            (bad / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConversionError, match="not \\['LlavaQwenForCausalLM'\\]"):
        convert(bad, tmp_path / "out", vision_heads=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_converted_prompt_path(llava_dirs, video):
    """The converted processor's chat template is LLaVA-Video's conversation; <video> expands to the pooled
    frame tokens plus one newline token."""
    import numpy as np
    from transformers import AutoProcessor

    _, out = llava_dirs
    proc = AutoProcessor.from_pretrained(out)
    chat = prompts.messages("hello", "video", 4)
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\nhello"
                "<|im_end|>\n<|im_start|>assistant\n")
    assert prompts.render(chat, prompts.LLAVA_VIDEO_CHAT_TEMPLATE) == expected
    assert proc.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == expected
    enc = proc(text=[expected], videos=[np.zeros((4, 64, 64, 3), np.uint8)], return_tensors="pt")
    video_id = proc.tokenizer.convert_tokens_to_ids("<video>")
    # 56 px / 14 px patches = 4x4, bilinear pooling to 2x2 = 4 tokens per frame, 4 frames, + 1 newline = 17
    assert int((enc["input_ids"] == video_id).sum()) == 17


def test_hf_qwen_batches_the_sets_with_left_padding(qwen, video):
    sets = [(0, 3, 7, 15), (1, 2, 5, 9, 12, 19), (4, 8), (2, 6, 10, 14)]
    reqs = [request(f"q#{g}", video, idx) for g, idx in enumerate(sets)]
    before = qwen.stats["generate_calls"]
    batched = qwen.answer(reqs)
    assert qwen.stats["generate_calls"] - before == 1
    alone = [qwen.answer([r])[0] for r in reqs]
    assert [a.text for a in batched] == [a.text for a in alone]  # left padding leaves every answer unchanged
    assert [a.extra["prompt_tokens"] for a in batched] == [a.extra["prompt_tokens"] for a in alone]
    tokens = {a.extra["num_frames"]: a.extra["prompt_tokens"] for a in batched}
    # 4 video tokens per temporal pair of 64 px frames: 2 frames 4 tokens, 4 frames 8, 6 frames 12
    assert (tokens[6] - tokens[4], tokens[4] - tokens[2]) == (4, 4)
    assert all(a.option == parse_option(a.text, len(OPTIONS), OPTIONS) for a in batched)


def test_hf_quarantines_bad_requests(qwen, video, tmp_path):
    reqs = [request("ok#0", video, (0, 4)), request("gone#0", str(tmp_path / "x.mp4"), (0,)),
            request("many#0", video, range(9))]
    answers = {a.key: a for a in qwen.answer(reqs)}
    assert "error" not in answers["ok#0"].extra
    assert "no such file" in answers["gone#0"].extra["error"]
    assert "num_frames=8" in answers["many#0"].extra["error"]


def test_hf_llava_video_answers_with_times_in_the_prompt(llava_dirs, video):
    _, out = llava_dirs
    answerer = build_answerer("hf", {"model": str(out), "num_frames": 8, "frame_size": 56, "max_tokens": 3})
    assert answerer.family.name == "llava_onevision" and answerer.style.time_instruction
    reqs = [request(f"l#{g}", video, idx) for g, idx in enumerate([(0, 3, 7, 15), (1, 5, 9, 13)])]
    answers = answerer.answer(reqs)
    assert answerer.stats["generate_calls"] == 1 and all("error" not in a.extra for a in answers)
    assert answers[0].extra["prompt_tokens"] == answers[1].extra["prompt_tokens"]


def test_settings_are_checked_before_any_model_loads():
    from tspo_ray.answerers.model_io import ConfigError

    with pytest.raises(ConfigError, match=r"answerer.settings.max_new_tokens: unknown hf answerer option"):
        build_answerer("hf", model="x", max_new_tokens=3)
    with pytest.raises(ConfigError, match=r"answerer.settings.model: required"):
        build_answerer("hf", {})
    with pytest.raises(ConfigError, match=r"answerer.settings.dtype: must be one of"):
        build_answerer("hf", model="x", dtype="int8")
