"""Train the tiny CLIP of the synthetic world and ship it in tspo_ray/assets/tiny_clip/.

    nice uv run python pipelines/train_tiny_clip.py [--minutes 11] [--out tspo_ray/assets/tiny_clip]

Training frames are rendered scenes (1-2 objects of 6 shapes x 6 colours on 4 backgrounds, random positions and
scales, pixel noise) passed through the videos' MPEG-4 codec at several quantiser levels and decoded by decord at
64 px. Texts are the world's short descriptions and question stems plus each frame's caption, under a
multi-positive contrastive loss (see tspo_ray/synthetic/tiny_clip.py). Writes model.safetensors, config.json, the
tokenizer and metrics.json (zero-shot accuracy and retrieval on held-out frames), replacing --out atomically.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tspo_ray.synthetic.tiny_clip import (
    FORMS,
    WordingHead,
    build_model,
    build_tokenizer,
    caption_text,
    held_out_set,
    multi_positive_loss,
    positives_matrix,
    random_scene,
    render_through_codec,
    worded_texts,
    wording_metrics,
    zero_shot_metrics,
)
from tspo_ray.video.encoders.hf_clip import HFClipEncoder, ImageSettings, file_digest

HELD_OUT_SEED = 987_654


def make_pool(n: int, seed: int, chunk: int = 2000):
    """n training scenes and their decoded 64-px frames; each chunk is one clip at its own quantiser level."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    frames = []
    for k, i in enumerate(tqdm(range(0, n, chunk), desc="render + encode + decode training frames")):
        frames.append(render_through_codec(scenes[i : i + chunk], seed * 1000 + k, qscale=rng.choice([2, 3, 4, 6])))
    return scenes, np.concatenate(frames)


def save_atomic(model, tokenizer, out: Path, metrics: dict) -> None:
    """Write the whole folder next to `out`, then swap it in, so a crash never leaves half a model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    # No image processor: the encoder resizes and normalises from these numbers (see encoders/hf_clip.py).
    (tmp / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    metrics = {**metrics, "weights_sha1": file_digest(tmp / "model.safetensors", 40)}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases, embeddings' scale or the logit scale."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        (plain if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def train(model, tokenizer, scenes, frames, args, eval_fn=None) -> dict:
    """The training loop: linear warm-up then cosine decay over `steps`, cut short (schedule included) when the
    time budget runs out first, so a busy machine still finishes in time."""
    rng = random.Random(args.seed)
    fixed_texts, fixed_reqs, fixed_forms = zip(*worded_texts())
    fixed_tok = tokenizer(list(fixed_texts), padding="max_length", max_length=16, return_tensors="pt")
    fixed_pos = positives_matrix(scenes, fixed_reqs)  # [N, 170]
    forms = torch.tensor([FORMS.index(f) for f in fixed_forms])
    wording = WordingHead(model.config.projection_dim)
    captions = [caption_text(s)[0] for s in scenes]
    cap_ids = {c: i for i, c in enumerate(sorted(set(captions)))}
    cap_of = torch.tensor([cap_ids[c] for c in captions])
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)  # uint8; normalised per batch
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay) + [{"params": wording.parameters(),
                            "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    budget, t0, step, history = args.minutes * 60, time.time(), 0, []
    bar = tqdm(desc="train", unit="step")
    model.train()
    while (frac := max(step / args.steps, (time.time() - t0) / budget)) < 1:
        lr = args.lr * min(1.0, frac / args.warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.tensor(rng.sample(range(len(scenes)), args.batch))
        batch_caps = sorted(set(cap_of[idx[: args.captions]].tolist()))  # a few captions: the text side stays cheap
        cap_tok = tokenizer([captions[int((cap_of == c).nonzero()[0])] for c in batch_caps], padding="max_length",
                            max_length=fixed_tok["input_ids"].shape[1], return_tensors="pt")
        ids = torch.cat([fixed_tok["input_ids"], cap_tok["input_ids"]])
        mask = torch.cat([fixed_tok["attention_mask"], cap_tok["attention_mask"]])
        x = (pixels[idx].float() / 255.0 - 0.5) / 0.5
        out = model(input_ids=ids, attention_mask=mask, pixel_values=x)
        positives = torch.cat([fixed_pos[idx], cap_of[idx, None] == torch.tensor(batch_caps)[None, :]], dim=1)
        wording_loss = wording.loss(out.text_embeds[: len(forms)], forms)
        loss = multi_positive_loss(out.logits_per_image, positives) + args.wording_weight * wording_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", wording=f"{wording_loss.item():.3f}", lr=f"{lr:.1e}", scale=f"{model.logit_scale.exp().item():.1f}")
        if eval_fn is not None and step % args.eval_every == 0:
            model.eval()
            history.append({"step": step, "minutes": round((time.time() - t0) / 60, 2), **eval_fn(model)})
            tqdm.write(json.dumps(history[-1]))
            model.train()
    bar.close()
    model.eval()
    return {"train_steps": step, "train_minutes": round((time.time() - t0) / 60, 2), "history": history}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tspo_ray/assets/tiny_clip")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=11.0, help="time budget (rendering not included)")
    ap.add_argument("--captions", type=int, default=64, help="caption texts per step")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=float, default=0.05, help="warm-up, as a fraction of the budget")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--layers", type=int, default=6, help="vision transformer layers")
    ap.add_argument("--pool", type=int, default=24000, help="rendered training frames")
    ap.add_argument("--held-out", type=int, default=1000, help="held-out frames for metrics.json")
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wording-weight", type=float, default=0.5, help="weight of the wording loss (tiny_clip.py)")
    ap.add_argument("--init", help="continue from this tiny-CLIP folder (same vocabulary) instead of random weights")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    if args.init:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(args.init)
        if model.config.text_config.vocab_size != len(tokenizer.get_vocab()):
            raise SystemExit(f"--init {args.init}: vocabulary of {model.config.text_config.vocab_size} words, "
                             f"the world has {len(tokenizer.get_vocab())}")
        args.width, args.layers = model.config.vision_config.hidden_size, model.config.vision_config.num_hidden_layers
    else:
        model = build_model(len(tokenizer.get_vocab()), width=args.width, layers=args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny CLIP: {n_params / 1e6:.2f}M parameters")
    t_render = time.time()
    scenes, frames = make_pool(args.pool, args.seed)
    probe_scenes, probe_frames = held_out_set(300, HELD_OUT_SEED + 1)
    render_minutes = (time.time() - t_render) / 60
    live = HFClipEncoder.from_parts(model, tokenizer, ImageSettings(64, (0.5,) * 3, (0.5,) * 3), "live")
    progress = lambda m: {**{k: v for k, v in zero_shot_metrics(live, probe_scenes, probe_frames).items()
                             if k.endswith(("accuracy", "auc"))}, **wording_metrics(live)}
    info = train(model, tokenizer, scenes, frames, args, eval_fn=progress)
    held_scenes, held_frames = held_out_set(args.held_out, HELD_OUT_SEED)
    metrics = {**zero_shot_metrics(live, held_scenes, held_frames), "wording_cosine": wording_metrics(live)}
    metrics.update(parameters=n_params, batch=args.batch, lr=args.lr, pool=args.pool, width=args.width,
                   layers=args.layers, continued_from=args.init, wording_weight=args.wording_weight, render_minutes=round(render_minutes, 2), **info)
    out = Path(args.out)
    save_atomic(model, tokenizer, out, metrics)
    # the shipped files, loaded back through the encoder the system uses, must give the same numbers
    reloaded = zero_shot_metrics(HFClipEncoder(str(out)), held_scenes, held_frames)
    assert reloaded["shape_accuracy"] == metrics["shape_accuracy"], (reloaded, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
