"""The CPU decoder: PyAV, only the frames the temporal plan asks for.

Frames are picked at decode time (the frame on screen at each planned time), and only
picked frames are converted to RGB and resized, in FFmpeg's scaler, to the model's
size. Decoding stops after the last planned time. A clip that cannot be decoded (empty,
not a video, truncated) fails alone with a message that says what is wrong.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from emodist.decoders.frames import decoded_row, fit_frame
from emodist.decoders.probe import probe_container
from emodist.errors import ClipError
from emodist.io.open import NOT_READABLE, ClipHandle, open_clip
from emodist.plan import FramePlan, make_plan

# A planned time may fall this far past the last frame's start (it is still on screen).
EPS_S = 1e-3


# Packets demuxed ahead of the one being decoded, to learn which frame follows it on
# screen; more than any B-frame reordering depth.
_LOOKAHEAD_PACKETS = 16


def decoded_frames(container, stream, targets: np.ndarray, skip_unpicked: bool) -> Iterator[object]:
    """The stream's frames in presentation order, as `container.decode(stream)` gives them;
    with `skip_unpicked`, the non-reference frames (B-frames nothing is predicted from)
    that no planned time picks are not decoded at all (libavcodec's skip_frame=NONREF,
    set per packet): a quarter of a real H.264 clip's decode time.

    A frame is on screen at t when its time <= t + eps < the next frame's time, so a
    packet may be skipped when no target falls in [its time - eps, next time - eps). The
    next time is the smallest later time among the packets demuxed so far, the next
    _LOOKAHEAD_PACKETS included: when the true next frame comes later still, the window
    only grows, and the frame is decoded when it need not be, never the other way round.
    Packets without a time, the earliest frame seen so far (it also covers any earlier
    target) and the last packets of the file (the end-of-file checks read the last
    frame) are always decoded. The frames picked are the same as without skipping
    (tests/stages/test_decode.py)."""
    if not skip_unpicked:
        yield from container.decode(stream)
        return
    import bisect
    from collections import deque

    tb = float(stream.time_base or 0)
    ts = [float(t) for t in targets]
    ctx = stream.codec_context
    seen: list[float] = []  # times of the packets demuxed so far, sorted
    window: deque = deque()

    def needed(pkt, at_end: bool) -> bool:
        if at_end or pkt.pts is None or not tb:
            return True
        f = pkt.pts * tb
        k = bisect.bisect_right(seen, f)
        nxt = seen[k] if k < len(seen) else float("inf")
        lo = -float("inf") if bisect.bisect_left(seen, f) == 0 else f - EPS_S
        i = bisect.bisect_left(ts, lo)
        return i < len(ts) and ts[i] < nxt - EPS_S

    def decode(pkt, at_end: bool = False):
        mode = "DEFAULT" if needed(pkt, at_end) else "NONREF"
        if ctx.skip_frame != mode:
            ctx.skip_frame = mode
        return pkt.decode()

    try:
        for pkt in container.demux(stream):
            if pkt.pts is not None and tb:
                bisect.insort(seen, pkt.pts * tb)
            window.append(pkt)
            if len(window) > _LOOKAHEAD_PACKETS:
                yield from decode(window.popleft())
        while window:
            yield from decode(window.popleft(), at_end=True)
    finally:
        ctx.skip_frame = "DEFAULT"


def frames_at(container, stream, targets: np.ndarray, skip_unpicked: bool = False) -> Iterator[tuple[int, object]]:
    """(target index, frame on screen at that time), decoding no further than needed.
    Frames stop at the end of the stream or at the first packet FFmpeg cannot decode (a
    file cut short ends in one); targets past the last good frame fail the clip."""
    import av

    ti, prev, broken = 0, None, None
    frames = decoded_frames(container, stream, targets, skip_unpicked)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            broken = f" (then FFmpeg: {exc.strerror or exc})"
            break
        t = frame.time if frame.time is not None else 0.0
        while ti < len(targets) and targets[ti] < t - EPS_S:
            yield ti, prev if prev is not None else frame
            ti += 1
        if ti == len(targets):
            return
        prev = frame
    if prev is None:
        raise ClipError(f"no frame could be decoded{broken or ''}; the file is damaged")
    end = (prev.time or 0.0) + (prev.duration or 0) * float(prev.time_base or 0) + 0.1
    if targets[-1] > end:
        raise ClipError(
            f"truncated: frames stop at {prev.time:.2f} s{broken or ''} but the plan needs a frame at "
            f"{targets[-1]:.2f} s of the declared duration; re-download or re-encode the clip"
        )
    for j in range(ti, len(targets)):
        yield j, prev


def decode_video(handle: ClipHandle, cfg) -> dict:
    """Decode one opened video by the plan; returns the decode columns of its row."""
    import av

    try:
        container = av.open(handle.for_pyav(), mode="r")
    except PermissionError:  # av's own is one too: the file is fine, this user cannot read it
        raise ClipError(NOT_READABLE) from None
    except av.error.FFmpegError as exc:
        raise ClipError(
            f"not a readable video (FFmpeg: {exc.strerror or exc}): truncated, damaged, or not a "
            "video at all; re-download or re-encode it"
        ) from None
    try:
        probe, stream = probe_container(container, cfg)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.decode.ffmpeg_threads
        plan: FramePlan = make_plan(cfg.mode, cfg.plan, probe.duration_s, probe.fps)
        frames = np.empty((len(plan.ts_s), cfg.decode.height, cfg.decode.width, 3), np.uint8)
        last_src, last_img = None, None
        scaler = av.video.reformatter.VideoReformatter()
        try:
            for i, frame in frames_at(container, stream, plan.ts_s, cfg.decode.skip_unpicked):
                if frame is not last_src:  # a frame picked twice is converted once
                    last_src = frame
                    last_img = fit_frame(frame, cfg.decode.width, cfg.decode.height, cfg.decode.fit, scaler)
                frames[i] = last_img
        except av.error.FFmpegError as exc:
            raise ClipError(f"decoding failed ({exc.strerror or exc}); the file is damaged") from None
        return decoded_row(frames, plan, probe.duration_s, probe.fps, cfg, handle.uri)
    finally:
        container.close()


def decode_clip(uri: str, cfg, data: bytes | None = None) -> dict:
    """Open and decode one video (from `uri`, or from `data`, a tar member's bytes)."""
    with open_clip(uri, cfg, data) as handle:
        return decode_video(handle, cfg)
