"""Keyframe strips: the frames on screen at the keyframe times, small; a clip that no
longer decodes gets no strip and a reason, never a failed page."""
from __future__ import annotations

from PIL import Image

from emodist.audit import frames
from emodist.config import Config
from emodist.synth import synthesize


def test_strip_of_a_real_clip(tmp_path):
    synthesize(tmp_path / "clips", 1, seed=1, size=128, min_s=2.0, max_s=2.2)
    files, why = frames.write_strip(str(tmp_path / "clips" / "clip_00000.mp4"), [0.0, 1.0, 1.96, 9.0],
                                    tmp_path / "page" / "frames", "x", Config())
    assert why is None and files == [f"frames/x_{i:02d}.jpg" for i in range(4)]  # 9.0 s: the last frame
    for f in files:
        with Image.open(tmp_path / "page" / f) as im:
            assert im.height == frames.HEIGHT_PX and im.format == "JPEG"


def test_a_broken_clip_gets_a_reason(tmp_path):
    (tmp_path / "bad.mp4").write_text("not a video")
    files, why = frames.write_strip(str(tmp_path / "bad.mp4"), [0.0], tmp_path / "frames", "b", Config())
    assert files == [] and why


def test_strip_times():
    assert frames.strip_times([]) == [0.0, 0.5, 1.0, 1.5]
    many = [float(t) for t in range(20)]
    picked = frames.strip_times(many)
    assert len(picked) == frames.MAX_FRAMES and picked[0] == 0.0 and picked[-1] == 19.0
