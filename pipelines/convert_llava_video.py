"""Convert a released LLaVA-Video checkpoint (`LlavaQwenForCausalLM`, e.g. lmms-lab/LLaVA-Video-7B-Qwen2) to the
HF LLaVA-OneVision format (`LlavaOnevisionForConditionalGeneration`) that vLLM and transformers load.

    uv run python pipelines/convert_llava_video.py --src /models/LLaVA-Video-7B-Qwen2 --out /models/llava-video-7b-ov

What changes:
- weights: renamed shard by shard (no model is instantiated, so a 7B needs one shard of memory), see KEY_RULES;
- config: the Qwen2 text config from the source's fields, a SigLIP vision config read off the tensor shapes (the
  checkpoint stores the tower with its last layer dropped, as LLaVA runs it), LLaVA-OneVision's projector/feature
  settings, and the ids of the <image>/<video> tokens added to the tokenizer;
- processor: SigLIP pixel statistics (mean = std = 0.5) at the tower's input size, and LLaVA-Video's training
  conversation as chat template (tspo_ray.answerers.prompts.LLAVA_VIDEO_CHAT_TEMPLATE).
What does not carry over: the released model lays out video tokens "grid"-style (a newline token after every row
of every pooled frame); LLaVA-OneVision in transformers and vLLM appends one newline token per video. Pooling
(bilinear, stride 2) and everything else match. The output folder is written next to its final place and renamed
into it, so a failed run never leaves a half-written model.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from tspo_ray.answerers.prompts import LLAVA_VIDEO_CHAT_TEMPLATE

# (source pattern, target) applied in order, first match wins; target None drops the tensor.
# Targets are the classic llava-hf layout, which both transformers (its llava_next renames) and vLLM load.
KEY_RULES: list[tuple[str, str | None]] = [
    (r"\.rotary_emb\.inv_freq$", None),  # recomputed at load time
    (r"^model\.vision_tower\.vision_tower\.vision_model\.head\.", None),  # SigLIP pooling head: LLaVA does not use it
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "vision_tower.vision_model."),
    (r"^model\.mm_projector\.0\.", "multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\b", r"language_model.model.\1"),
    (r"^lm_head\.", "language_model.lm_head."),
]

# Qwen2 text-config fields read from the source config.json (the LLaVA extras are left behind).
TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act",
               "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id",
               "eos_token_id", "tie_word_embeddings", "initializer_range")


class ConversionError(ValueError):
    """The source is not a LLaVA-Video (LlavaQwen) checkpoint this script can convert; the message says why."""


def convert_key(key: str) -> str | None:
    """The llava-hf name of a LlavaQwen tensor, None for tensors that are dropped; unknown names raise."""
    for pattern, target in KEY_RULES:
        if re.search(pattern, key):
            return None if target is None else re.sub(pattern, target, key)
    raise ConversionError(f"tensor {key!r} has no place in LLaVA-OneVision (not a LlavaQwen checkpoint?)")


def convert_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Renamed tensors (the same tensor objects), dropped ones left out."""
    out = {}
    for key, value in state.items():
        new = convert_key(key)
        if new is not None:
            out[new] = value
    return out


def vision_config_from_shapes(shapes: dict[str, tuple[int, ...]], num_heads: int | None) -> dict[str, Any]:
    """SigLIP vision config of the stored tower, read off its tensor shapes (source key names)."""
    prefix = "model.vision_tower.vision_tower.vision_model."
    try:
        hidden, _, patch, _ = shapes[prefix + "embeddings.patch_embedding.weight"]
        positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
        intermediate = shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as exc:
        raise ConversionError(f"no SigLIP vision tower in the checkpoint (missing {exc.args[0]})") from None
    layer = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := layer.match(k)))
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"vision position embeddings ({positions}) do not form a square patch grid")
    if num_heads is None:
        if hidden != 1152:
            raise ConversionError(f"vision hidden size {hidden} is not SigLIP-so400m's 1152: pass --vision-heads")
        num_heads = 16
    return {"model_type": "siglip_vision_model", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": num_heads, "patch_size": patch,
            "image_size": side * patch, "layer_norm_eps": 1e-6, "vision_use_head": False}


def text_config_from(src: dict[str, Any]) -> dict[str, Any]:
    if src.get("architectures") != ["LlavaQwenForCausalLM"]:
        raise ConversionError(f"config.json architectures is {src.get('architectures')}, not ['LlavaQwenForCausalLM']")
    cfg = {k: src[k] for k in TEXT_FIELDS if k in src}
    cfg["model_type"] = "qwen2"
    return cfg


def build_config(src: dict[str, Any], vision: dict[str, Any], image_token_id: int, video_token_id: int):
    from transformers import LlavaOnevisionConfig

    text = text_config_from(src)
    size = vision["image_size"]
    config = LlavaOnevisionConfig(
        text_config=text, vision_config=vision, image_token_index=image_token_id, video_token_index=video_token_id,
        projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
        multimodal_projector_bias=True, tie_word_embeddings=bool(src.get("tie_word_embeddings", False)),
        image_grid_pinpoints=src.get("image_grid_pinpoints") or [[size, size]],
        vision_aspect_ratio=src.get("image_aspect_ratio") or "anyres_max_9")
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    return config


def build_processor(src_dir: Path, vision: dict[str, Any], pinpoints: list, aspect: str):
    """Tokenizer with <image>/<video> added, SigLIP-normalising image and video processors, the chat template."""
    from transformers import (
        AddedToken,
        AutoTokenizer,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(src_dir)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False),
                          AddedToken("<video>", special=True, normalized=False)], special_tokens=True)
    size = vision["image_size"]
    stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": size, "width": size}}
    image = LlavaOnevisionImageProcessor(image_grid_pinpoints=pinpoints, **stats)
    video = LlavaOnevisionVideoProcessor(**stats)
    return LlavaOnevisionProcessor(
        image_processor=image, video_processor=video, tokenizer=tokenizer,
        num_image_tokens=(size // vision["patch_size"]) ** 2, vision_feature_select_strategy="full",
        chat_template=LLAVA_VIDEO_CHAT_TEMPLATE, vision_aspect_ratio=aspect)


def source_shards(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.exists():
        return sorted({src / name for name in json.loads(index.read_text())["weight_map"].values()})
    single = src / "model.safetensors"
    if single.exists():
        return [single]
    raise ConversionError(f"{src}: no model.safetensors or model.safetensors.index.json")


def _read_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    return shapes


def _write_weights(shards: list[Path], out: Path, dtype: str | None, progress: bool) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    weight_map, total = {}, 0
    for n, shard in enumerate(tqdm(shards, desc="converting shards", disable=not progress), 1):
        tensors = convert_state_dict(load_file(str(shard)))
        if dtype:
            tensors = {k: v.to(getattr(torch, dtype)) for k, v in tensors.items()}
        name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += sum(v.numel() * v.element_size() for v in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def convert(src: str | Path, out: str | Path, vision_heads: int | None = None, dtype: str | None = None,
            progress: bool = True) -> Path:
    """Convert src (a LlavaQwen checkpoint folder) into out (a LLaVA-OneVision folder). Returns out."""
    from transformers import GenerationConfig

    src, out = Path(src), Path(out)
    if not (src / "config.json").exists():
        raise ConversionError(f"{src}: no config.json")
    src_cfg = json.loads((src / "config.json").read_text())
    shards = source_shards(src)
    shapes = _read_shapes(shards)
    for key in shapes:
        convert_key(key)  # every tensor must have a place before anything is written
    vision = vision_config_from_shapes(shapes, vision_heads)
    pinpoints = src_cfg.get("image_grid_pinpoints") or [[vision["image_size"]] * 2]
    processor = build_processor(src, vision, pinpoints, src_cfg.get("image_aspect_ratio") or "anyres_max_9")
    tok = processor.tokenizer
    image_id, video_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<video>")
    if max(image_id, video_id) >= src_cfg["vocab_size"]:
        raise ConversionError(f"<image>/<video> get ids {image_id}/{video_id}, outside the embedding table "
                              f"(vocab_size={src_cfg['vocab_size']})")
    config = build_config(src_cfg, vision, image_id, video_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        _write_weights(shards, tmp, dtype, progress)
        config.save_pretrained(tmp)
        GenerationConfig(bos_token_id=src_cfg.get("bos_token_id"), eos_token_id=src_cfg.get("eos_token_id"),
                         pad_token_id=tok.pad_token_id).save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="folder of the released LlavaQwen checkpoint")
    ap.add_argument("--out", required=True, help="output folder (replaced when it exists)")
    ap.add_argument("--vision-heads", type=int, default=None, help="attention heads of the vision tower "
                    "(default: 16, SigLIP-so400m)")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                    help="cast the weights (default: keep the checkpoint's)")
    args = ap.parse_args(argv)
    print(convert(args.src, args.out, args.vision_heads, args.dtype))


if __name__ == "__main__":
    main()
