"""Versioned prompt templates. A prompt is a list of chat content parts, with images
passed separately in the order of their {"type": "image"} parts, so every backend
(transformers, vLLM) renders the same prompt through the model's own chat template.

Override with `describer.prompt` (fields: {n_frames}, {start_s}, {end_s}) and
`labeler.prompt` (fields: {options}, the lettered option lines). Changing a template
changes the config hash; bump PROMPT_VERSION when the defaults change.
"""
from __future__ import annotations

import string
from collections.abc import Sequence

from emodist.config import Mode

# v2: keyframes and in-between frames without a face are said to have none (issue 32).
PROMPT_VERSION = "v2"
LETTERS = string.ascii_uppercase

DESCRIBE_TEMPLATE = (
    "These {n_frames} frames show one face from {start_s:.2f} s to {end_s:.2f} s. "
    "In one short sentence, describe how the face moves (brows, eyes, mouth)."
)
QUESTION_TEMPLATE = (
    "Which emotion does the person show?\n{options}\nAnswer with the letter of one option."
)
INTRO = {
    "msce": "Keyframes of a video of a face, in time order, with a description of the "
    "facial motion between each pair of keyframes.",
    "sparse": "Frames of a video of a face, in time order.",
    "dense": "Frames of a video of a face, in time order.",
    "text": "Descriptions of the facial motion in a video of a face, in time order.",
}

NO_FACE = "no face in view (not shown)."

Part = dict[str, str]


def text(s: str) -> Part:
    return {"type": "text", "text": s}


IMAGE: Part = {"type": "image"}


def describe_prompt(n_frames: int, start_s: float, end_s: float, template: str | None = None) -> list[Part]:
    body = (template or DESCRIBE_TEMPLATE).format(n_frames=n_frames, start_s=start_s, end_s=end_s)
    return [IMAGE] * n_frames + [text(body)]


def options_block(options: Sequence[str]) -> str:
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
    return "\n".join(f"{LETTERS[i]}. {name}" for i, name in enumerate(options))


def label_prompt(
    mode: Mode,
    keyframe_ts_s: Sequence[float],
    descriptions: Sequence[str],
    gap_spans_s: Sequence[tuple[float, float]],
    options: Sequence[str],
    template: str | None = None,
    keyframe_face: Sequence[bool] | None = None,
) -> list[Part]:
    """Keyframes interleaved with the descriptions of the gaps between them (msce),
    keyframes only (sparse, dense) or descriptions only (text), then the question.
    A keyframe without a face (`keyframe_face`) is said to have none, without its image:
    the model is never asked to read an emotion from a background. The descriptions
    already name the in-between frames without a face ("no face at 4.25-4.75 s")."""
    parts: list[Part] = [text(INTRO[mode])]
    show_images = mode != "text"
    show_text = mode in ("msce", "text")
    for k, t in enumerate(keyframe_ts_s):
        if show_images and keyframe_face is not None and not keyframe_face[k]:
            parts.append(text(f"\nFrame at {t:.2f} s: {NO_FACE}"))
        elif show_images:
            parts += [text(f"\nFrame at {t:.2f} s:"), IMAGE]
        if show_text and k < len(descriptions):
            start, end = gap_spans_s[k]
            parts.append(text(f"\nFrom {start:.2f} s to {end:.2f} s: {descriptions[k] or '(no description)'}"))
    question = (template or QUESTION_TEMPLATE).format(options=options_block(options))
    parts.append(text("\n" + question))
    return parts


def describe_requests(gaps, template: str | None = None) -> tuple[list[list[Part]], list[list]]:
    """(prompts, images) for a describer: one prompt per gap, its in-between frames."""
    return ([describe_prompt(len(g.frames), g.start_s, g.end_s, template) for g in gaps],
            [list(g.frames) for g in gaps])


def label_requests(clips, option_orders, mode: Mode, template: str | None = None) -> tuple[list[list[Part]], list[list]]:
    """(prompts, images) for a labeler: per clip, one prompt per label order
    (`option_orders(clip_id)`), keyframes as images except in text mode."""
    parts, images = [], []
    for clip in clips:
        face = clip.keyframe_face
        shown = [] if mode == "text" else [f for k, f in enumerate(clip.keyframes) if face is None or face[k]]
        for options in option_orders(clip.clip_id):
            parts.append(label_prompt(mode, clip.keyframe_ts_s, clip.descriptions, clip.gap_spans_s, options,
                                      template, face))
            images.append(list(shown))
    return parts, images
