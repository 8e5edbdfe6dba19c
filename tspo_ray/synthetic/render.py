"""Rendering one frame of the synthetic world: coloured shapes on a background. Deterministic, pure numpy/PIL.

The vocabulary (shapes, colours, backgrounds) is shared by the video generator, the tiny CLIP's training data
and the embedded answerer's option statements, so that all three speak the same language.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
# Backgrounds are kept far from every object colour so that colour words always mean the object.
BACKGROUNDS = {
    "black": (15, 15, 15),
    "white": (235, 235, 235),
    "grey": (120, 120, 120),
    "navy": (20, 25, 70),
}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    x: float = 0.5  # centre, fraction of width
    y: float = 0.5  # centre, fraction of height
    scale: float = 0.3  # radius as a fraction of the frame side

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; known: {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; known: {tuple(COLOURS)}")

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.42
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        t = r * 0.33
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx + t, cy + t),
            (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]
    raise ValueError(shape)


def render_frame(objects: list[Obj], background: str, size: int = 128, noise_seed: int | None = None) -> np.ndarray:
    """Render objects (drawn in order) on a background: uint8 [size, size, 3] RGB.

    noise_seed adds mild per-pixel noise (deterministic for a seed) so that frames are not trivially identical.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; known: {tuple(BACKGROUNDS)}")
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    for obj in objects:
        cx, cy, r = obj.x * size, obj.y * size, obj.scale * size
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=colour)
    arr = np.asarray(img, dtype=np.uint8).copy()
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        arr = np.clip(arr.astype(np.int16) + rng.integers(-8, 9, arr.shape), 0, 255).astype(np.uint8)
    return arr


def caption(objects: list[Obj], background: str) -> str:
    """The canonical caption of a frame, e.g. 'a red star and a blue circle on a black background'."""
    if not objects:
        return f"an empty {background} background"
    names = " and ".join(f"a {o.name}" for o in objects)
    return f"{names} on a {background} background"
