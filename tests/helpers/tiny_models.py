"""Builders of tiny, randomly initialised Video-MLLMs saved to local folders (no downloads), and a test video.

- `build_tiny_qwen2_5_vl(out)`: a Qwen2.5-VL (2 text layers, head_dim 64 as vLLM's CPU attention needs, a 2-block
  vision tower) with a byte-level BPE tokenizer trained here, Qwen's special tokens and its chat template. vLLM and
  transformers both load it.
- `build_fake_llava_qwen(out)`: a checkpoint in the released LLaVA-Video layout (`LlavaQwenForCausalLM`:
  model.layers..., model.vision_tower.vision_tower.vision_model..., model.mm_projector.0/2, lm_head), for the
  conversion script.
- `write_ramp_video(path)`: a real MPEG-4 file whose frame i is a flat grey of level `ramp_level(i)`, so a test can
  tell from the decoded pixels which frames were read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Enough text for the BPE to learn the prompt's words; the model's answers are random anyway.
_CORPUS = [
    "You are a helpful assistant.", "Answer with the option's letter from the given choices directly.",
    "What colour is the star? What shape is the red object? What appears right after the blue square?",
    "What is shown at the beginning of the video? How many times does a red star appear?",
    "A. red B. blue C. green D. yellow E. purple F. orange", "a red circle a blue cross a purple star triangle",
    "The video lasts for 12.00 seconds, and 8 frames are sampled from it. These frames are located at 0.50s,1.00s.",
    "Please answer the following questions related to this video. 0 1 2 3 4 5 6 7 8 9 system user assistant",
]


def train_bpe_tokenizer(specials: list[str], vocab_size: int = 400):
    """A byte-level BPE (Qwen's tokenizer family) trained on a few prompt sentences, specials first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def _fast_tokenizer(tok, eos: str, pad: str, extra_specials: list[str]):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, unk_token=None,
                                   additional_special_tokens=extra_specials, model_max_length=32768)


def build_tiny_qwen2_5_vl(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny random Qwen2.5-VL with tokenizer, processor (min/max pixels for 56-84 px frames) and template."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from tspo_ray.answerers.prompts import QWEN2_5_VL_CHAT_TEMPLATE

    out = Path(out)
    tokenizer = _fast_tokenizer(train_bpe_tokenizer(QWEN_SPECIALS), "<|im_end|>", "<|endoftext|>", QWEN_SPECIALS[1:])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    vocab = 512  # > the tokenizer's size, as in the real model (padded embedding table)
    text = dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=1, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, tokens_per_second=2, window_size=112, out_hidden_size=128,
                  fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    pixels = dict(min_pixels=56 * 56, max_pixels=84 * 84)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                                    video_processor=Qwen2VLVideoProcessor(**pixels), tokenizer=tokenizer,
                                    chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    return out


# --- the released LLaVA-Video layout (LlavaQwenForCausalLM), tiny -----------------------------------------------

#: SigLIP-like tower of the fake checkpoint: 56 px / 14 px patches = 4x4 patches, 2 layers (the last one dropped,
#: as LLaVA does, leaves what the checkpoint stores).
FAKE_VISION = dict(hidden=64, intermediate=128, layers=2, patch=14, image=56, heads=1)
FAKE_TEXT = dict(hidden=128, intermediate=256, layers=2, heads=2, kv_heads=1, vocab=512)


def fake_llava_qwen_state_dict(seed: int = 0) -> dict:
    """Random tensors under the key names of lmms-lab/LLaVA-Video-7B-Qwen2 (shapes scaled down)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    t, v = FAKE_TEXT, FAKE_VISION
    head_dim = t["hidden"] // t["heads"]
    kv = t["kv_heads"] * head_dim

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    sd = {"model.embed_tokens.weight": rnd(t["vocab"], t["hidden"]), "model.norm.weight": 1 + rnd(t["hidden"]),
          "lm_head.weight": rnd(t["vocab"], t["hidden"])}
    for i in range(t["layers"]):
        p = f"model.layers.{i}."
        sd.update({p + "self_attn.q_proj.weight": rnd(t["hidden"], t["hidden"]),
                   p + "self_attn.q_proj.bias": rnd(t["hidden"]),
                   p + "self_attn.k_proj.weight": rnd(kv, t["hidden"]), p + "self_attn.k_proj.bias": rnd(kv),
                   p + "self_attn.v_proj.weight": rnd(kv, t["hidden"]), p + "self_attn.v_proj.bias": rnd(kv),
                   p + "self_attn.o_proj.weight": rnd(t["hidden"], t["hidden"]),
                   p + "mlp.gate_proj.weight": rnd(t["intermediate"], t["hidden"]),
                   p + "mlp.up_proj.weight": rnd(t["intermediate"], t["hidden"]),
                   p + "mlp.down_proj.weight": rnd(t["hidden"], t["intermediate"]),
                   p + "input_layernorm.weight": 1 + rnd(t["hidden"]),
                   p + "post_attention_layernorm.weight": 1 + rnd(t["hidden"])})
    vp = "model.vision_tower.vision_tower.vision_model."
    npatch = (v["image"] // v["patch"]) ** 2
    sd.update({vp + "embeddings.patch_embedding.weight": rnd(v["hidden"], 3, v["patch"], v["patch"]),
               vp + "embeddings.patch_embedding.bias": rnd(v["hidden"]),
               vp + "embeddings.position_embedding.weight": rnd(npatch, v["hidden"]),
               vp + "post_layernorm.weight": 1 + rnd(v["hidden"]), vp + "post_layernorm.bias": rnd(v["hidden"])})
    for i in range(v["layers"]):
        p = f"{vp}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[p + f"self_attn.{name}.weight"] = rnd(v["hidden"], v["hidden"])
            sd[p + f"self_attn.{name}.bias"] = rnd(v["hidden"])
        sd.update({p + "mlp.fc1.weight": rnd(v["intermediate"], v["hidden"]),
                   p + "mlp.fc1.bias": rnd(v["intermediate"]),
                   p + "mlp.fc2.weight": rnd(v["hidden"], v["intermediate"]), p + "mlp.fc2.bias": rnd(v["hidden"]),
                   p + "layer_norm1.weight": 1 + rnd(v["hidden"]), p + "layer_norm1.bias": rnd(v["hidden"]),
                   p + "layer_norm2.weight": 1 + rnd(v["hidden"]), p + "layer_norm2.bias": rnd(v["hidden"])})
    sd.update({"model.mm_projector.0.weight": rnd(t["hidden"], v["hidden"]),
               "model.mm_projector.0.bias": rnd(t["hidden"]),
               "model.mm_projector.2.weight": rnd(t["hidden"], t["hidden"]),
               "model.mm_projector.2.bias": rnd(t["hidden"]),
               "model.image_newline": rnd(t["hidden"])})
    return sd


def build_fake_llava_qwen(out: str | Path, seed: int = 0) -> Path:
    """A folder like the released checkpoint: config.json (LlavaQwenForCausalLM + mm_* fields), safetensors
    shards with an index, and a Qwen-style tokenizer without the <image>/<video> tokens."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t, v = FAKE_TEXT, FAKE_VISION
    tokenizer = _fast_tokenizer(train_bpe_tokenizer(LLAVA_SPECIALS), "<|im_end|>", "<|endoftext|>", LLAVA_SPECIALS[1:])
    tokenizer.save_pretrained(out)
    config = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava", "hidden_size": t["hidden"],
        "intermediate_size": t["intermediate"], "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
        "num_key_value_heads": t["kv_heads"], "vocab_size": t["vocab"], "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"), "torch_dtype": "float32",
        "mm_vision_tower": "tiny-siglip", "mm_hidden_size": v["hidden"], "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_spatial_pool_mode": "bilinear",
        "mm_spatial_pool_stride": 2, "mm_newline_position": "grid", "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": [[56, 56], [56, 112], [112, 56], [112, 112]], "mm_patch_merge_type": "spatial_unpad",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    sd = fake_llava_qwen_state_dict(seed)
    # Two shards with an index, as the released 7B checkpoint is sharded.
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: sd[k].contiguous() for k in shard_keys}, str(out / name))
        weight_map.update({k: name for k in shard_keys})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


# --- a real test video --------------------------------------------------------------------------------------------

def ramp_level(i: int) -> int:
    """The grey level of frame i in write_ramp_video (distinct, well apart, within uint8)."""
    return 10 + 12 * i


def write_ramp_video(path: str | Path, num_frames: int = 20, size: int = 64, fps: int = 2) -> Path:
    """An MPEG-4 file of num_frames flat grey frames (frame i at level ramp_level(i)), via PyAV."""
    import av

    path = Path(path)
    if ramp_level(num_frames - 1) > 250:
        raise ValueError(f"at most {(250 - 10) // 12 + 1} frames keep the grey levels distinct")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}  # near-lossless, so decoded levels stay within a few units
        for i in range(num_frames):
            frame = np.full((size, size, 3), ramp_level(i), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def build_clip_tokenizer(model_max_length: int = 32):
    """A real CLIPTokenizer (byte-level BPE with CLIP's </w> word ends) over a byte alphabet and a few merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({f"{c}</w>": len(vocab) + i for i, c in enumerate(sorted(alphabet))})
    merges = [("t", "h"), ("th", "e</w>"), ("o", "n"), ("s", "t")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def build_tspo_layout(out: str | Path, seed: int = 0, dim: int = 32, image_size: int = 32) -> Path:
    """A folder in the published TSPO-0.4B layout, tiny and random: a transformers CLIPModel saved with
    save_pretrained in bf16 safetensors, the selector's `selector.*` tensors (ffn_o included, as upstream saves it)
    in the same safetensors file, and the CLIP processor files (preprocessor_config.json, tokenizer) beside it."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = Path(out)
    tok = build_clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=dim)
    CLIPModel(config).to(torch.bfloat16).save_pretrained(out)
    weights = out / "model.safetensors"
    state = load_file(str(weights))
    for name in ("temporal.Self_q", "temporal.Self_k", "temporal.Self_v", "temporal.ffn_o", "mlp.0", "mlp.2"):
        layer = torch.nn.Linear(dim, dim)
        state[f"selector.{name}.weight"] = layer.weight.detach().to(torch.bfloat16)
        state[f"selector.{name}.bias"] = (torch.randn(dim) * 0.1).to(torch.bfloat16)
    save_file(state, str(weights), metadata={"format": "pt"})
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    tok.save_pretrained(out)
    return out
