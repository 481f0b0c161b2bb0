"""One probe of a clip before any decoding, shared by every decoder: its size, codec,
frame rate (with a fallback), duration and frame count, checked against the input
limits (io/limits.py). A clip over a limit fails alone with the key to raise."""
from __future__ import annotations

from dataclasses import dataclass

from emodist.errors import ClipError
from emodist.io import limits

DEFAULT_FPS = 25.0  # when a container states no frame rate
# FFmpeg's still-image demuxers (an image renamed .mp4 opens as one of these): the
# names users know for them; any other `*_pipe` or image2 is named by its upper case.
_IMAGE_FORMATS = {"png_pipe": "PNG", "jpeg_pipe": "JPEG", "webp_pipe": "WebP", "bmp_pipe": "BMP",
                  "tiff_pipe": "TIFF", "jpegxl_pipe": "JPEG XL", "qoi_pipe": "QOI"}


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    fps: float
    duration_s: float
    frames: int  # declared, or duration x fps
    codec: str = ""
    pix_fmt: str = ""

    def check(self, cfg, duration_detail: str = "", frames_what: str = "the clip declares") -> Probe:
        """Raise ClipError for a clip over an input limit; else self."""
        limits.check_resolution(self.width, self.height, cfg)
        limits.check_duration(self.duration_s, cfg, duration_detail)
        limits.check_frames(self.frames, cfg, frames_what)
        return self


def duration_s(container, stream) -> float:
    """The stream's duration, else the container's, else frames / rate."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    raise ClipError("the container states no duration; remux it (ffmpeg -i in -c copy out.mp4)")


def image_kind(container) -> str | None:
    """'PNG', 'JPEG', ... when FFmpeg opened a still image, not a video; else None."""
    name = (container.format.name or "").split(",")[0]
    if name in _IMAGE_FORMATS:
        return _IMAGE_FORMATS[name]
    if name.endswith("_pipe") or name == "image2":
        codec = container.streams.video[0].codec_context.name if container.streams.video else ""
        return (codec or name.removesuffix("_pipe")).upper()
    return None


def probe_container(container, cfg) -> tuple[Probe, object]:
    """(probe, video stream) of an open PyAV container, limits checked."""
    kind = image_kind(container)
    if kind is not None:
        # Said before the duration check: an image has none, and "remux it" would mislead.
        raise ClipError(
            f"a {kind} image, not a video (renamed?); remove it, or convert it to a video, or put a "
            "clip's images in a folder of their own (a frame folder)"
        )
    if not container.streams.video:
        raise ClipError("no video stream; expected a video file")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
    width, height = ctx.width or 0, ctx.height or 0
    # Resolution first: a huge frame is refused before its duration is even read.
    limits.check_resolution(width, height, cfg)
    seconds = duration_s(container, stream)
    frames = int(stream.frames or 0) or int(round(seconds * fps))
    fmt = ctx.format.name if ctx.format is not None else ""
    return Probe(width, height, fps, seconds, frames, ctx.name, fmt).check(cfg), stream
