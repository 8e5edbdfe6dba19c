"""An independent restatement of the reference forward pass (Hui-design/TSPO model/temporal_agent.py:
TSPOModel.extract_feature and MultiModal_Align.forward), written with a dense T x T window mask, and test frames."""
import math

import numpy as np
import torch
from PIL import Image


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

