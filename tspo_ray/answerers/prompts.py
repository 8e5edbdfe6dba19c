"""Multiple-choice prompts and chat templates per model family. Pure functions; no models, no engines.

The question part is the paper's: the question, the options as "A. ...", then
"Answer with the option's letter from the given choices directly.".
Families differ in how the frames' times reach the model:
- Qwen2.5-VL takes the frames as one video with metadata (native fps, total frames, the selected frame indices);
  its processor turns that into the seconds per temporal grid of its time-aligned rotary positions.
- LLaVA-Video (served as LLaVA-OneVision) was trained with the times written in the prompt (its "time instruction"),
  so the selected frames' real timestamps go there.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Sequence

ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# Qwen2.5-VL-Instruct's own template (as shipped in its processor config).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-Video's training conversation ("qwen_1_5": ChatML with the default system prompt, the visual token on its
# own line before the text), with the HF LLaVA-OneVision placeholders <video> / <image>.
LLAVA_VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """How one model family takes frames, times and prompts."""

    name: str
    #: HF `model_type`s of the family
    model_types: tuple[str, ...]
    chat_template: str
    #: the processor takes video metadata (fps, total frames, frame indices) and derives times from it
    video_metadata: bool
    #: write the frames' timestamps into the prompt (the family was trained that way)
    time_instruction: bool


FAMILIES = {
    "qwen2_5_vl": Family("qwen2_5_vl", ("qwen2_5_vl",), QWEN2_5_VL_CHAT_TEMPLATE, True, False),
    "llava_onevision": Family("llava_onevision", ("llava_onevision",), LLAVA_VIDEO_CHAT_TEMPLATE, False, True),
}


def family_for(model_type: str) -> Family:
    """The family of an HF config's model_type; a clear error for the ones not supported."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ValueError(f"model_type {model_type!r} has no prompt family; supported: {known}")


def option_lines(options: Sequence[str]) -> list[str]:
    """"A. text" per option; options that already carry their letter ("A. x", "(A) x") are kept as they are."""
    lines = []
    for letter, text in zip(string.ascii_uppercase, options):
        text = str(text).strip()
        if text.startswith((f"{letter}.", f"({letter})", f"{letter})")):
            lines.append(text)
        else:
            lines.append(f"{letter}. {text}")
    return lines


def mc_text(question: str, options: Sequence[str]) -> str:
    """The paper's multiple-choice text: question, lettered options, answer instruction."""
    return "\n".join([question.strip(), *option_lines(options), ANSWER_INSTRUCTION])


def time_instruction(duration_s: float, timestamps_s: Sequence[float]) -> str:
    """LLaVA-Video's time instruction with the selected frames' real times ("sampled": keyframes are not uniform)."""
    times = ",".join(f"{t:.2f}s" for t in timestamps_s)
    return (f"The video lasts for {duration_s:.2f} seconds, and {len(timestamps_s)} frames are sampled from it. "
            f"These frames are located at {times}.Please answer the following questions related to this video.")


def user_text(question: str, options: Sequence[str], duration_s: float | None = None,
              timestamps_s: Sequence[float] | None = None) -> str:
    """The text part of the user turn; with timestamps (and duration) the time instruction comes first."""
    text = mc_text(question, options)
    if timestamps_s is not None:
        if duration_s is None:
            raise ValueError("the time instruction needs the video duration")
        text = time_instruction(duration_s, timestamps_s) + "\n" + text
    return text


def messages(text: str, input_mode: str, num_frames: int) -> list[dict[str, Any]]:
    """One user turn: the frames (one video, or one image per frame), then the text."""
    if input_mode == "video":
        visual = [{"type": "video"}]
    elif input_mode == "images":
        visual = [{"type": "image"} for _ in range(num_frames)]
    else:
        raise ValueError(f"input_mode must be 'video' or 'images', got {input_mode!r}")
    return [{"role": "user", "content": [*visual, {"type": "text", "text": text}]}]


def render(chat: list[dict[str, Any]], template: str) -> str:
    """Render a chat with a generation prompt, with the Jinja settings transformers uses for chat templates."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=chat, add_generation_prompt=True, add_vision_id=False)
