"""Question wording of the synthetic world, shared by the generator, the tiny CLIP's text data and the answerer.

The question stem (without options) is what CLIP encodes as F_t, so the stems name the object to look for.
"""
from __future__ import annotations

FAMILIES = ("needle_attribute", "relation", "position", "counting")

# needle attribute: the needle object's shape is unique in the video; ask its colour (or the reverse).
NEEDLE_COLOUR = "What colour is the {shape}?"
NEEDLE_SHAPE = "What shape is the {colour} object?"
# temporal relation: the event right after / right before the anchor event.
RELATION_AFTER = "What appears right after the {colour} {shape}?"
RELATION_BEFORE = "What appears right before the {colour} {shape}?"
# position: the first / last event of the video.
POSITION_BEGINNING = "What is shown at the beginning of the video?"
POSITION_END = "What is shown at the end of the video?"
# counting: how many separate events show the object.
COUNTING = "How many times does a {colour} {shape} appear?"

ALL_TEMPLATES = (
    NEEDLE_COLOUR, NEEDLE_SHAPE, RELATION_AFTER, RELATION_BEFORE, POSITION_BEGINNING, POSITION_END, COUNTING,
)
