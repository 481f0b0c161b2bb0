"""The input limits (`input.max_file_mb`, `max_width`/`max_height`, `max_duration_s`,
`max_frames`), checked in one place before anything is decoded, so that untrusted input
cannot exhaust memory. Each check raises a ClipError naming the limit and the key to
raise; the clip fails alone."""
from __future__ import annotations

from emodist.errors import ClipError


def size_problem(nbytes: int, cfg, what: str = "file") -> str | None:
    limit = cfg.input.max_file_mb * 2**20
    if nbytes > limit:
        return (f"{what} is {nbytes / 2**20:.1f} MiB, over the limit input.max_file_mb = "
                f"{cfg.input.max_file_mb:g}; raise input.max_file_mb to accept it")
    return None


def check_size(nbytes: int, cfg, what: str = "file") -> None:
    problem = size_problem(nbytes, cfg, what)
    if problem:
        raise ClipError(problem)


def check_resolution(width: int, height: int, cfg, subject: str | None = None) -> None:
    """`subject`: what is that large ('image 26.png'); None: the clip's resolution."""
    lim = cfg.input
    if width > lim.max_width or height > lim.max_height:
        what = f"{subject} is {width}x{height}," if subject else f"resolution {width}x{height} is"
        raise ClipError(
            f"{what} over the limit input.max_width x input.max_height = "
            f"{lim.max_width}x{lim.max_height}; raise input.max_width / input.max_height to accept it"
        )


def check_duration(seconds: float, cfg, detail: str = "") -> None:
    if seconds > cfg.input.max_duration_s:
        raise ClipError(
            f"duration {seconds:.1f} s{detail} is over the limit input.max_duration_s = "
            f"{cfg.input.max_duration_s:g}; raise input.max_duration_s to accept it"
        )


def check_frames(frames: int, cfg, what: str = "the clip declares") -> None:
    if frames > cfg.input.max_frames:
        raise ClipError(
            f"{what} {frames} frames, over the limit input.max_frames = {cfg.input.max_frames}; "
            "raise input.max_frames to accept it"
        )
