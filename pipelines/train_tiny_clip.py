"""Train the tiny CLIP of the synthetic world and ship it in tspo_ray/assets/tiny_clip/.

    uv run python pipelines/train_tiny_clip.py [--minutes 10] [--out tspo_ray/assets/tiny_clip]

Frames are rendered on the fly (shapes x colours x backgrounds, noise, JPEG artefacts); texts are captions, partial
descriptions and the question stems of the synthetic world. Writes model.safetensors, config, tokenizer and
metrics.json (zero-shot shape / colour accuracy on held-out renders).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tspo_ray.encoders.hf_clip import HFClipEncoder  # noqa: E402
from tspo_ray.synthetic.tiny_clip import (  # noqa: E402
    build_model, build_tokenizer, multi_positive_loss, random_scene, render_scene, satisfies, texts_for,
    zero_shot_accuracy,
)


def make_pool(n: int, seed: int):
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    images = np.stack([render_scene(s, rng) for s in tqdm(scenes, desc="render training frames")])
    return scenes, images


def save(model, tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tspo_ray/assets/tiny_clip")
    ap.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    ap.add_argument("--batch", type=int, default=192)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pool", type=int, default=24000, help="rendered training frames")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer.get_vocab()))
    print(f"tiny CLIP: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    scenes, images = make_pool(args.pool, args.seed)
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    budget, t0, step = args.minutes * 60, time.time(), 0
    est_steps = None
    bar = tqdm(desc="train", unit="step")
    model.train()
    while time.time() - t0 < budget:
        elapsed = time.time() - t0
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.sample(range(len(scenes)), args.batch)
        pairs = [texts_for(scenes[i], rng) for i in idx]
        texts, reqs = [t for t, _ in pairs], [r for _, r in pairs]
        positives = torch.tensor([[satisfies(scenes[i], r) for r in reqs] for i in idx])
        tok = tokenizer(texts, padding=True, return_tensors="pt")
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels[idx])
        loss = multi_positive_loss(out.image_embeds, out.text_embeds, positives, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
    bar.close()
    model.eval()
    out = Path(args.out)
    save(model, tokenizer, out)
    metrics = zero_shot_accuracy(HFClipEncoder(str(out)))
    metrics.update(train_steps=step, train_minutes=round((time.time() - t0) / 60, 2), batch=args.batch,
                   parameters=sum(p.numel() for p in model.parameters()))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
