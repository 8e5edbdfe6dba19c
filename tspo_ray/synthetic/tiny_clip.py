"""The tiny CLIP of the synthetic world: model config, word-level tokenizer, training frames, texts, loss, metrics.

Frames go through the same path as the videos' frames do at run time: rendered at 128 px, encoded with the
videos' MPEG-4 codec, decoded by decord at the model's 64 px (tspo_ray.video.frames.read_frames).

Texts are matched to frames by the attributes they name. Each step scores every image of the batch against
(a) the fixed set of short texts the system uses -- "a red star", "a star", "a red object" and every question stem
filled with an object ("What colour is the star?", "How many times does a red star appear?") -- and (b) each
image's canonical caption. A short text fits many frames ("a star" fits every frame with a star), so treating the
other frames of the batch as negatives would push true pairs apart; the loss is multi-positive instead: each row's
target is spread uniformly over all of its true pairs, in both directions (image->texts and text->images).

That loss alone teaches the text tower to forget wording: "What appears right after the red star?", "... right
before ..." and "How many times does a red star appear?" all have the same positives, so they collapse onto one
vector (cosine 1.000), and a selector conditioned on F_t can no longer tell the question forms apart -- where a
real CLIP's text tower keeps them distinct. A wording loss keeps them apart: every short text (the position stems
included, which have no image positives) is classified into its form against learned form prototypes.
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tspo_ray.synthetic import templates, writer
from tspo_ray.synthetic.render import BACKGROUNDS, COLOURS, SHAPES, Obj, caption, render_frame

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
IMAGE_SIZE = 64
RENDER_SIZE = 128  # the videos' frame size
MAX_TOKENS = 24

# A requirement is what a text states about a frame: ("obj", shape, colour), ("shape", s), ("colour", c), or
# ("exact", frozenset of (shape, colour), background) for a full caption.
Requirement = tuple


def shipped_vocabulary() -> set[str]:
    """The words the shipped tiny CLIP's tokenizer knows (families may only use these unless it is retrained)."""
    import json

    from tspo_ray.video.encoders import embedded_clip_dir

    vocab = json.loads((Path(embedded_clip_dir()) / "tokenizer.json").read_text())["model"]["vocab"]
    return {w for w in vocab if w not in SPECIALS}


def vocabulary() -> list[str]:
    """Every word of the templates, the renderer's names and the captions, plus the special tokens."""
    words = set()
    for t in list(templates.ALL_TEMPLATES) + ["a {colour} {shape} and an empty background object on"]:
        words.update(t.replace("?", " ").replace("{", " ").replace("}", " ").lower().split())
    words.update(SHAPES, COLOURS, BACKGROUNDS)
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
                                   eos_token="[EOS]", model_max_length=MAX_TOKENS)


def build_model(vocab_size: int, width: int = 96, layers: int = 6, projection: int = 64, text_layers: int = 2):
    """A transformers CLIPModel: ViT with 8-px patches on 64-px frames, a small text transformer."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 2,
                         num_hidden_layers=text_layers, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=width, intermediate_size=width * 2,
                           num_hidden_layers=layers, num_attention_heads=4, num_channels=3),
        projection_dim=projection,
    )
    return CLIPModel(cfg)


# --- frames -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str

    @property
    def pairs(self) -> frozenset:
        return frozenset((o.shape, o.colour) for o in self.objects)


def random_scene(rng: random.Random, p_single: float = 0.7) -> Scene:
    """One or two distinct objects at random positions and scales (two objects are smaller, side by side)."""
    n = 1 if rng.random() < p_single else 2
    objs, used = [], set()
    for i in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        while (shape, colour) in used:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        used.add((shape, colour))
        if n == 1:
            x, scale = rng.uniform(0.3, 0.7), rng.uniform(0.18, 0.34)
        else:
            x, scale = (rng.uniform(0.2, 0.32) if i == 0 else rng.uniform(0.68, 0.8)), rng.uniform(0.13, 0.19)
        objs.append(Obj(shape, colour, x, rng.uniform(0.3, 0.7), scale))
    return Scene(tuple(objs), rng.choice(list(BACKGROUNDS)))


def render_through_codec(scenes: Sequence[Scene], seed: int, qscale: int = writer.QSCALE, size: int = IMAGE_SIZE,
                         progress: bool = False) -> np.ndarray:
    """Render scenes at the videos' size, encode them as one clip with the world's codec (writer.py), decode with
    decord at `size`: uint8 [N, size, size, 3], the pixels the encoder sees at run time."""
    import av
    from tqdm import tqdm

    from tspo_ray.video.frames import read_frames

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream(writer.CODEC, rate=2)
            stream.width = stream.height = RENDER_SIZE
            stream.pix_fmt = "yuv420p"
            stream.gop_size = writer.GOP
            stream.options = {"qscale": str(qscale)}
            for i, s in enumerate(tqdm(scenes, desc="render frames", disable=not progress)):
                arr = render_frame(list(s.objects), s.background, RENDER_SIZE, noise_seed=seed * 1_000_003 + i)
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return read_frames(path, range(len(scenes)), size)


# --- texts ------------------------------------------------------------------------------------------------------

def object_texts(shape: str, colour: str) -> list[str]:
    """The texts that name one object: its name, and the question stems that ask about it."""
    return [f"a {colour} {shape}", templates.RELATION_AFTER.format(colour=colour, shape=shape),
            templates.RELATION_BEFORE.format(colour=colour, shape=shape),
            templates.COUNTING.format(colour=colour, shape=shape)]


# The wording of a short text, whatever object it names (see worded_texts).
FORMS = ("name", "colour_of", "shape_of", "after", "before", "counting", "beginning", "end")
OBJECT_FORMS = ("name", "after", "before", "counting")  # the forms of object_texts, in order


def short_texts() -> list[tuple[str, Requirement]]:
    """Every short text the system asks about one object, shape or colour, with the requirement it states."""
    return [(t, r) for t, r, _ in worded_texts() if r[0] != "none"]


def worded_texts() -> list[tuple[str, Requirement, str]]:
    """Every short text with the requirement it states and its form (FORMS); the position stems name no object,
    so no frame satisfies them ("none"), but they take part in the wording loss."""
    out: list[tuple[str, Requirement, str]] = []
    for s in SHAPES:
        for c in COLOURS:
            out += [(t, ("obj", s, c), f) for t, f in zip(object_texts(s, c), OBJECT_FORMS)]
        out += [(f"a {s}", ("shape", s), "name"), (templates.NEEDLE_COLOUR.format(shape=s), ("shape", s), "colour_of")]
    for c in COLOURS:
        out += [(f"a {c} object", ("colour", c), "name"),
                (templates.NEEDLE_SHAPE.format(colour=c), ("colour", c), "shape_of")]
    out += [(templates.POSITION_BEGINNING, ("none",), "beginning"), (templates.POSITION_END, ("none",), "end")]
    return out


def caption_text(scene: Scene) -> tuple[str, Requirement]:
    return caption(list(scene.objects), scene.background), ("exact", scene.pairs, scene.background)


def satisfies(scene: Scene, req: Requirement) -> bool:
    if req[0] == "exact":
        return scene.pairs == req[1] and scene.background == req[2]
    if req[0] == "obj":
        return (req[1], req[2]) in scene.pairs
    if req[0] == "shape":
        return any(s == req[1] for s, _ in scene.pairs)
    if req[0] == "colour":
        return any(c == req[1] for _, c in scene.pairs)
    if req[0] == "none":
        return False
    raise ValueError(f"unknown requirement {req!r}")


def positives_matrix(scenes: Sequence[Scene], reqs: Sequence[Requirement]) -> torch.Tensor:
    """bool [images, texts]: which texts are true of which frames."""
    return torch.tensor([[satisfies(s, r) for r in reqs] for s in scenes], dtype=torch.bool)


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss over logits [images, texts], each row's target uniform over its true pairs.

    Rows (or columns) without any true pair in the batch are left out of their direction's mean.
    """
    pos = positives.float()

    def direction(lg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        n = p.sum(1)
        keep = n > 0
        ce = -(p[keep] / n[keep, None] * F.log_softmax(lg[keep], dim=1)).sum(1)
        return ce.mean()

    return (direction(logits, pos) + direction(logits.T, pos.T)) / 2


class WordingHead(torch.nn.Module):
    """Form prototypes for the wording loss (used in training only, not shipped)."""

    def __init__(self, dim: int, temperature: float = 0.1):
        super().__init__()
        self.prototypes = torch.nn.Parameter(torch.randn(len(FORMS), dim) / dim ** 0.5)
        self.temperature = temperature

    def loss(self, text_embeds: torch.Tensor, forms: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each text's form from its cosine to the prototypes: at temperature 0.1 a confident
        answer needs a margin of a few tenths of cosine, so forms stay visibly apart, not just separable."""
        logits = F.normalize(text_embeds, dim=-1) @ F.normalize(self.prototypes, dim=-1).T / self.temperature
        return F.cross_entropy(logits, forms)


class UnitFeatures:
    """An encoder view whose features are unit-normalised (encoders return raw CLIP features; metrics use cosines)."""

    def __init__(self, encoder):
        self.encoder = encoder

    def encode_text(self, texts) -> torch.Tensor:
        return F.normalize(self.encoder.encode_text(texts), dim=-1)

    def encode_frames(self, frames, batch_size: int = 64) -> torch.Tensor:
        return F.normalize(self.encoder.encode_frames(frames, batch_size=batch_size), dim=-1)


@torch.no_grad()
def wording_metrics(encoder) -> dict[str, float]:
    """Mean cosine between texts naming the same object in different wordings (after vs before, after vs counting,
    name vs after), and between the two position stems. 1.0 means the text tower cannot tell them apart."""
    encoder = UnitFeatures(encoder)
    pairs = {"after_vs_before": (1, 2), "after_vs_counting": (1, 3), "name_vs_after": (0, 1)}
    texts = [object_texts(s, c) for s in SHAPES for c in COLOURS]
    feats = torch.stack([encoder.encode_text(t) for t in texts])  # [36, 4, D]
    out = {k: round(float((feats[:, i] * feats[:, j]).sum(-1).mean()), 4) for k, (i, j) in pairs.items()}
    pos = encoder.encode_text([templates.POSITION_BEGINNING, templates.POSITION_END])
    out["beginning_vs_end"] = round(float(pos[0] @ pos[1]), 4)
    return out


# --- held-out metrics -------------------------------------------------------------------------------------------

def held_out_set(num: int, seed: int) -> tuple[list[Scene], np.ndarray]:
    """Single-object held-out frames (training distribution of positions and scales), through the codec."""
    rng = random.Random(seed)
    scenes = [random_scene(rng, p_single=1.0) for _ in range(num)]
    return scenes, render_through_codec(scenes, seed)


@torch.no_grad()
def zero_shot_metrics(encoder, scenes: Sequence[Scene], frames: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy on single-object frames: the shape among 6 prompts ("a star"), the colour among 6
    ("a red object"), the object among 36 ("a red star"); image->caption and caption->image retrieval among the
    set's distinct captions; and how well each object's question stems rank frames showing it (ROC AUC)."""
    encoder = UnitFeatures(encoder)
    img = encoder.encode_frames(frames)
    shapes, colours = list(SHAPES), list(COLOURS)
    truth_s = torch.tensor([shapes.index(s.objects[0].shape) for s in scenes])
    truth_c = torch.tensor([colours.index(s.objects[0].colour) for s in scenes])
    shape_acc = ((img @ encoder.encode_text([f"a {s}" for s in shapes]).T).argmax(1) == truth_s).float().mean()
    colour_acc = ((img @ encoder.encode_text([f"a {c} object" for c in colours]).T).argmax(1) == truth_c).float().mean()
    names = [(s, c) for s in shapes for c in colours]
    truth_o = truth_s * len(colours) + truth_c
    obj_acc = ((img @ encoder.encode_text([f"a {c} {s}" for s, c in names]).T).argmax(1) == truth_o).float().mean()
    captions = sorted({caption_text(s)[0] for s in scenes})
    own = torch.tensor([captions.index(caption_text(s)[0]) for s in scenes])
    sims = img @ encoder.encode_text(captions).T  # [N, C]
    i2t = (sims.argmax(1) == own).float().mean()
    t2i = (own[sims.argmax(0)] == torch.arange(len(captions))).float().mean()
    return {
        "shape_accuracy": round(float(shape_acc), 4), "colour_accuracy": round(float(colour_acc), 4),
        "object_accuracy": round(float(obj_acc), 4), "image_to_caption_accuracy": round(float(i2t), 4),
        "caption_to_image_accuracy": round(float(t2i), 4), "num_captions": len(captions),
        "question_stem_auc": round(stem_auc(encoder, scenes, img), 4), "num_frames": len(scenes),
    }


def stem_auc(encoder, scenes: Sequence[Scene], img: torch.Tensor) -> float:
    """Mean ROC AUC over the object question stems: P(a frame showing the object scores above one that does not)."""
    texts, reqs = zip(*[(t, r) for t, r in short_texts() if r[0] == "obj" and "?" in t])
    sims = F.normalize(img, dim=-1) @ F.normalize(encoder.encode_text(list(texts)), dim=-1).T
    pos = positives_matrix(scenes, reqs)
    aucs = []
    for j in range(len(texts)):
        p, n = sims[pos[:, j], j], sims[~pos[:, j], j]
        if len(p) and len(n):
            aucs.append(float((p[:, None] > n[None, :]).float().mean()))
    return float(np.mean(aucs))
