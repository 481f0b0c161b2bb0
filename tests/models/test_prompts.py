"""The VLM prompts: what the labeler is told about keyframes and gaps without a face."""
import numpy as np

from emodist.models import prompts
from emodist.models.base import ClipInput

OPTIONS = ("happy", "sad", "neutral")


def _texts(parts) -> str:
    return "".join(p["text"] if p["type"] == "text" else "<image>" for p in parts)


def test_a_keyframe_and_a_gap_without_a_face_are_said_so_not_shown():
    kf = np.zeros((3, 8, 8, 3), np.uint8)
    kf[2] = 7  # tells the images apart
    clip = ClipInput("c", kf, np.array([0.0, 1.0, 2.0]),
                     ["steady sad (1.0); no face at 0.75-1.00 s", "no face at 1.25-2.00 s"],
                     [(0.0, 1.0), (1.0, 2.0)], keyframe_face=np.array([True, False, True]))
    (parts,), (images,) = prompts.label_requests([clip], lambda _: [OPTIONS], "msce")
    text = _texts(parts)
    assert "Frame at 0.00 s:<image>" in text and "Frame at 2.00 s:<image>" in text
    assert "Frame at 1.00 s: no face in view (not shown)." in text
    assert "From 1.00 s to 2.00 s: no face at 1.25-2.00 s" in text
    assert len(images) == 2 == sum(p["type"] == "image" for p in parts)
    assert images[1].max() == 7  # the third keyframe, not the face-free second one


def test_without_face_flags_every_keyframe_is_shown_as_before():
    clip = ClipInput("c", np.zeros((2, 8, 8, 3), np.uint8), np.array([0.0, 1.0]), ["steady sad (1.0)"],
                     [(0.0, 1.0)])
    (parts,), (images,) = prompts.label_requests([clip], lambda _: [OPTIONS], "msce")
    assert len(images) == 2 and "no face" not in _texts(parts)
    # text mode shows no images whatever the flags say
    clip.keyframe_face = np.array([True, False])
    (parts,), (images,) = prompts.label_requests([clip], lambda _: [OPTIONS], "text")
    assert images == [] and "Frame at" not in _texts(parts)
