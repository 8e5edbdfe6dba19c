"""KeyframeSelector on a tiny random model saved in the TSPO-0.4B layout, scored from pixels, against an independent
restatement of the reference forward pass (Hui-design/TSPO model/temporal_agent.py: TSPOModel.extract_feature and
MultiModal_Align.forward), written here with a dense T x T window mask."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import build_tspo_layout
from tspo_ray import KeyframeSelector

QUESTION = "What is on the table?"


@pytest.fixture(scope="module")
def tspo_dir(tmp_path_factory):
    return build_tspo_layout(tmp_path_factory.mktemp("tspo04b"), seed=3)


def frames(T=40, seed=0):
    """Frames with structure (a drifting bright block) so neighbouring frames differ smoothly, not pure noise."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 60, (T, 48, 64, 3), dtype=np.uint8)
    for t in range(T):
        x = (t * 5) % 48
        out[t, 10:30, x : x + 16] = rng.integers(150, 256, 3, dtype=np.uint8)
    return out


def reference_scores(folder, frames_uint8, problem, window=12):
    """S before the temperature, as the reference computes it, in float32 on the bf16 weights."""
    from safetensors import safe_open
    from transformers import (
        CLIPImageProcessorPil,  # the PIL CLIPImageProcessor of transformers 4.x
        CLIPModel,
        CLIPProcessor,
    )

    clip = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    processor.image_processor = CLIPImageProcessorPil.from_pretrained(folder)
    with torch.no_grad():
        text_in = processor(text=problem, return_tensors="pt", padding=True, truncation=True)
        text = clip.get_text_features(input_ids=text_in["input_ids"], attention_mask=text_in["attention_mask"])
        images = [Image.fromarray(np.array(f)) for f in frames_uint8]
        image = clip.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
    text, image = getattr(text, "pooler_output", text), getattr(image, "pooler_output", image)
    clip_scores = torch.nn.CosineSimilarity(dim=-1)(text, image)

    with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as fh:
        w = {k[len("selector."):]: fh.get_tensor(k).float() for k in fh.keys() if k.startswith("selector.")}
    T, C = image.shape
    heads, hd = 8, C // 8
    position = torch.arange(T).unsqueeze(1) / T
    div_term = torch.exp(torch.arange(0, C, 2) * (-torch.log(torch.tensor(10000.0)) / C))
    pe = torch.zeros(T, C)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div_term), torch.cos(position * div_term)
    mask = torch.zeros(T, T)
    for j in range(T):
        for k in range(window):
            mask[j, min(max(j - window // 2 + k, 0), T - 1)] = 1.0
    x = image + pe
    lin = lambda name, v: v @ w[f"{name}.weight"].T + w[f"{name}.bias"]
    q, k, v = (lin(f"temporal.Self_{n}", x).view(T, heads, hd).permute(1, 0, 2) for n in "qkv")
    logits = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    attn = torch.softmax(logits.masked_fill(mask == 0, -1e6), dim=-1) @ v
    context = attn.transpose(0, 1).reshape(T, C)
    enhanced = lin("mlp.2", torch.relu(lin("mlp.0", context))) + image
    pair_cos = (enhanced @ text[0]) / (enhanced.norm(dim=-1) * text[0].norm() + 1e-6)
    return pair_cos + clip_scores, clip_scores


def test_tspo_layout_scores_match_the_reference_forward_pass(tspo_dir):
    sel = KeyframeSelector.from_pretrained(tspo_dir)
    assert sel.agent is not None and sel.encoder.dim == 32 and sel.inference_mode == "top-k"
    f = frames()
    want, want_clip = reference_scores(tspo_dir, f, QUESTION)
    got = sel.scores(f, QUESTION)
    diff = (got - want).abs().max().item()
    print(f"golden max |S_ours - S_reference| = {diff:.2e}")
    assert diff <= 1e-4
    assert (sel.scores(f, QUESTION, scorer="clip") - want_clip).abs().max().item() <= 1e-4
    # the reference feeds raw features: unit-normalising them first gives visibly different scores
    feats, text = sel.features(f, QUESTION)
    assert not torch.allclose(feats.norm(dim=-1), torch.ones(len(f)), atol=1e-2)
    unit = torch.nn.functional.normalize
    assert (sel.agent(unit(feats, dim=-1), unit(text, dim=-1)) - want).abs().max().item() > 1e-3


def test_clip_alone_and_bad_paths(tspo_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    clip_only = tmp_path / "clip"
    shutil.copytree(tspo_dir, clip_only)
    state = {k: v for k, v in load_file(str(clip_only / "model.safetensors")).items() if not k.startswith("selector.")}
    save_file(state, str(clip_only / "model.safetensors"), metadata={"format": "pt"})
    sel = KeyframeSelector.from_pretrained(clip_only)
    assert sel.agent is None
    assert sel.scores(frames(5), QUESTION, scorer="clip").shape == (5,)
    with pytest.raises(ValueError, match="agent scorer needs agent weights"):
        sel.scores(frames(5), QUESTION)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        KeyframeSelector.from_pretrained(tmp_path / "missing")


def test_feature_pipeline_encoder_can_preprocess_exactly_as_the_selector(tmp_path):
    """The Ray Data encoder built from a config with exact_processor gives the selector's own features, so benchmark
    features in the store are those the reference would compute (the default batched resize only approximates)."""
    import numpy as np
    import torch

    from tspo_ray import KeyframeSelector
    from tspo_ray.video.encoders import load_encoder

    folder = build_tspo_layout(tmp_path / "tspo", seed=5)
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 48, 80, 3), dtype=np.uint8)
    exact = load_encoder({"backend": "hf", "model": str(folder), "exact_processor": True})
    approx = load_encoder({"backend": "hf", "model": str(folder)})
    selector = KeyframeSelector.from_pretrained(folder)
    assert exact.name != approx.name  # feature-store entries of the two never mix
    torch.testing.assert_close(exact.encode_frames(frames), selector.encoder.encode_frames(frames))
