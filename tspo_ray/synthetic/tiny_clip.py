"""The tiny CLIP of the synthetic world: model config, word-level tokenizer, training data and evaluation.

Texts are matched to frames by the attributes they name, so a batch may hold several true pairs for one text
("a star" fits every frame with a star); the loss spreads each row's target over all its true pairs instead of
treating them as negatives.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tspo_ray.synthetic import templates
from tspo_ray.synthetic.render import BACKGROUNDS, COLOURS, SHAPES, Obj, caption, render_frame

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
IMAGE_SIZE = 64


def vocabulary() -> list[str]:
    words = set()
    texts = list(templates.ALL_TEMPLATES) + ["a {colour} {shape} and a {colour} {shape} on a {colour} background",
                                             "an empty background object"]
    for t in texts:
        words.update(t.replace("?", " ").replace("{", " ").replace("}", " ").lower().split())
    words.update(SHAPES, COLOURS, BACKGROUNDS)
    words -= {"shape", "colour"} & set()  # template placeholders are also real words ("What shape ...")
    return SPECIALS + sorted(words) + ["?"]


def build_tokenizer():
    """A word-level tokenizer saved with the model, loadable by AutoTokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=24)


def build_model(vocab_size: int, width: int = 128, layers: int = 3, projection: int = 64):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 2, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=24, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=width, intermediate_size=width * 2,
                           num_hidden_layers=layers, num_attention_heads=4, num_channels=3),
        projection_dim=projection,
    )
    return CLIPModel(cfg)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str


def random_scene(rng: random.Random) -> Scene:
    n = 1 if rng.random() < 0.75 else 2
    objs, used = [], set()
    for i in range(n):
        while True:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if (shape, colour) not in used:
                break
        used.add((shape, colour))
        x = rng.uniform(0.3, 0.7) if n == 1 else (rng.uniform(0.2, 0.35) if i == 0 else rng.uniform(0.65, 0.8))
        scale = rng.uniform(0.18, 0.32) if n == 1 else rng.uniform(0.12, 0.18)
        objs.append(Obj(shape, colour, x, rng.uniform(0.3, 0.7), scale))
    return Scene(tuple(objs), rng.choice(list(BACKGROUNDS)))


def render_scene(scene: Scene, rng: random.Random, size: int = 128) -> np.ndarray:
    """Rendered at the videos' size and downsampled as the encoder will, with noise and mild JPEG artefacts."""
    arr = render_frame(list(scene.objects), scene.background, size, noise_seed=rng.randrange(1 << 30))
    img = Image.fromarray(arr)
    if rng.random() < 0.5:
        import io

        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(40, 90))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))


# A text is (string, requirement); a requirement is a predicate over scenes.
def texts_for(scene: Scene, rng: random.Random) -> tuple[str, tuple]:
    """One text describing the scene, and the requirement it states (for the multi-positive targets)."""
    o = rng.choice(scene.objects)
    kind = rng.randrange(7)
    if kind == 0:
        return caption(list(scene.objects), scene.background), ("exact", frozenset((x.shape, x.colour) for x in scene.objects), scene.background)
    if kind == 1:
        return f"a {o.colour} {o.shape}", ("obj", o.shape, o.colour)
    if kind == 2:
        return f"a {o.shape}", ("shape", o.shape)
    if kind == 3:
        return f"a {o.colour} object", ("colour", o.colour)
    if kind == 4:
        return rng.choice([templates.NEEDLE_COLOUR]).format(shape=o.shape), ("shape", o.shape)
    if kind == 5:
        return templates.NEEDLE_SHAPE.format(colour=o.colour), ("colour", o.colour)
    t = rng.choice([templates.RELATION_AFTER, templates.RELATION_BEFORE, templates.COUNTING])
    return t.format(colour=o.colour, shape=o.shape), ("obj", o.shape, o.colour)


def satisfies(scene: Scene, req: tuple) -> bool:
    pairs = {(x.shape, x.colour) for x in scene.objects}
    if req[0] == "exact":
        return pairs == req[1] and scene.background == req[2]
    if req[0] == "obj":
        return (req[1], req[2]) in pairs
    if req[0] == "shape":
        return any(s == req[1] for s, _ in pairs)
    return any(c == req[1] for _, c in pairs)


def multi_positive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, positives: torch.Tensor,
                        logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss with targets spread uniformly over each row's true pairs."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    pos = positives.float()
    i2t = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(pos.T / pos.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


@torch.no_grad()
def zero_shot_accuracy(encoder, num: int = 600, seed: int = 12345) -> dict[str, float]:
    """Held-out renders (single object): pick the shape among 6 prompts, the colour among 6, and exact retrieval."""
    rng = random.Random(seed)
    scenes = []
    for _ in range(num):
        s = random_scene(rng)
        scenes.append(Scene(s.objects[:1], s.background))
    images = np.stack([render_scene(s, rng) for s in scenes])
    img = encoder.encode_frames(images)
    shape_txt = encoder.encode_text([f"a {s}" for s in SHAPES])
    colour_txt = encoder.encode_text([f"a {c} object" for c in COLOURS])
    names = [(s, c) for s in SHAPES for c in COLOURS]
    obj_txt = encoder.encode_text([f"a {c} {s}" for s, c in names])
    q_txt = encoder.encode_text([templates.NEEDLE_COLOUR.format(shape=s) for s in SHAPES])
    shape_ok = colour_ok = obj_ok = q_ok = 0
    for feat, sc in zip(img, scenes):
        o = sc.objects[0]
        shape_ok += SHAPES[int((shape_txt @ feat).argmax())] == o.shape
        colour_ok += list(COLOURS)[int((colour_txt @ feat).argmax())] == o.colour
        obj_ok += names[int((obj_txt @ feat).argmax())] == (o.shape, o.colour)
        q_ok += SHAPES[int((q_txt @ feat).argmax())] == o.shape
    return {"shape_accuracy": shape_ok / num, "colour_accuracy": colour_ok / num,
            "object_retrieval_accuracy": obj_ok / num, "question_stem_shape_accuracy": q_ok / num, "num_renders": num}
