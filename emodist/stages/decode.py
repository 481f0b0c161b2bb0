"""Decode stage: PyAV on CPU, only the frames the temporal plan asks for.

Frames are picked at decode time (the frame on screen at each planned time), and only
picked frames are converted to RGB and resized, in FFmpeg's scaler, to the model's
size. Decoding stops after the last planned time. A clip that cannot be decoded (empty,
not a video, truncated) fails alone with a message that says what is wrong.

Clips come as local files, objects (fsspec with the config's storage options: one GET
up to 64 MiB, else a read-ahead stream), bytes from a tar shard (the `data` column,
dropped here), a tar member named `shard.tar#member` (a retried clip), or folders of
images (`input.frame_folder_fps`; same plan, same resizing). The input limits
(`input.max_file_mb`, `max_width`/`max_height`, `max_duration_s`, `max_frames`) are
checked from the object's size and the container header before anything is decoded;
a clip over a limit fails alone with a message naming the key to raise.
"""
from __future__ import annotations

import io
import logging
import os
import posixpath
from collections.abc import Iterator

import numpy as np

from emodist import formats as fm
from emodist import schema as col
from emodist import storage
from emodist.config import Config
from emodist.plan import FramePlan, make_plan
from emodist.stages.base import Batch, ClipError, Stage, mark_failed, object_column

log = logging.getLogger(__name__)

DATA = "data"  # sources.DATA: a clip's bytes when it came out of a tar shard

# A planned time may fall this far past the last frame's start (it is still on screen).
_EPS_S = 1e-3


def fit_frame(frame, width: int, height: int, fit: str, scaler=None) -> np.ndarray:
    """RGB uint8 (height, width, 3) from an av.VideoFrame, aspect handled by `fit`.
    Pass one `av.video.reformatter.VideoReformatter` for all frames of a clip: FFmpeg's
    scaler context is then built once per clip, not per frame (about 2x at 224 px)."""
    if fit == "stretch":
        w, h = width, height
    else:
        scale = (min if fit == "pad" else max)(width / frame.width, height / frame.height)
        w = max(2, int(round(frame.width * scale)))
        h = max(2, int(round(frame.height * scale)))
    if scaler is not None:
        # threads=1: a scaler thread pool per frame costs more than it saves at model sizes.
        img = scaler.reformat(frame, width=w, height=h, format="rgb24", threads=1).to_ndarray()
    else:
        img = frame.to_ndarray(format="rgb24", width=w, height=h)
    if fit == "stretch":
        return img
    if fit == "crop":
        y0, x0 = (h - height) // 2, (w - width) // 2
        return np.ascontiguousarray(img[y0 : y0 + height, x0 : x0 + width])
    out = np.zeros((height, width, 3), dtype=np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = img[:height, :width]
    return out


def shuffled(frames: np.ndarray, gap: np.ndarray, seed: int, key: str) -> np.ndarray:
    """The frames with keyframe images permuted among keyframe slots and in-between
    images within their gap: same content, same timestamps, scrambled order."""
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    out = frames.copy()
    for g in np.unique(gap):
        idx = np.flatnonzero(gap == g)
        out[idx] = frames[rng.permutation(idx)]
    return out


# Objects up to this size are fetched with one GET and decoded from memory; larger ones
# are streamed through fsspec's read-ahead cache (PyAV seeks in them).
WHOLE_READ_BYTES = 64 << 20


def decoded_row(frames: np.ndarray, plan: FramePlan, duration: float, fps: float, cfg: Config, uri: str) -> dict:
    """The decode columns of one clip's row, whatever decoded it."""
    if cfg.plan.shuffle:
        frames = shuffled(frames, plan.gap, seed=cfg.run.seed, key=uri)
    return {col.FRAMES: frames, col.FRAME_TS: plan.ts_s, col.FRAME_GAP: plan.gap,
            col.DURATION_S: duration, col.NATIVE_FPS: fps}


def _check_size(size: int, cfg: Config, what: str = "file") -> None:
    limit = cfg.input.max_file_mb * 2**20
    if size > limit:
        raise ClipError(
            f"{what} is {size / 2**20:.1f} MiB, over the limit input.max_file_mb = "
            f"{cfg.input.max_file_mb:g}; raise input.max_file_mb to accept it"
        )


def _open(uri: str, cfg: Config | None = None, data: bytes | None = None):
    """(container, handle to close). In-memory bytes (a tar member) open from memory; a
    local path opens directly (seekable, no copy); anything else through fsspec with the
    config's storage options. The size limit is checked before anything is decoded."""
    import av

    cfg = cfg or Config()
    if data is not None:
        if len(data) == 0:
            raise ClipError("empty member (0 bytes); re-create the shard without it")
        _check_size(len(data), cfg, "video member")
        return av.open(io.BytesIO(data), mode="r"), None
    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        size = os.path.getsize(path)
        if size == 0:
            raise ClipError("empty file (0 bytes); re-export or remove the clip")
        _check_size(size, cfg)
        return av.open(path, mode="r"), None
    fs, path = storage.filesystem(uri, cfg)
    f = fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")
    try:
        if f.size == 0:
            raise ClipError("empty object (0 bytes); re-upload or remove the clip")
        _check_size(f.size, cfg, "object")
        if f.size <= WHOLE_READ_BYTES:
            buf = io.BytesIO(f.read())
            f.close()
            return av.open(buf, mode="r"), None
        return av.open(f, mode="r"), f
    except BaseException:
        f.close()
        raise


def _check_header(cfg: Config, stream, duration: float, fps: float) -> None:
    """Refuse, from the container header and before decoding, clips over the input limits."""
    lim = cfg.input
    w, h = stream.codec_context.width or 0, stream.codec_context.height or 0
    if w > lim.max_width or h > lim.max_height:
        raise ClipError(
            f"resolution {w}x{h} is over the limit input.max_width x input.max_height = "
            f"{lim.max_width}x{lim.max_height}; raise input.max_width / input.max_height to accept it"
        )
    if duration > lim.max_duration_s:
        raise ClipError(
            f"duration {duration:.1f} s is over the limit input.max_duration_s = {lim.max_duration_s:g}; "
            "raise input.max_duration_s to accept it"
        )
    frames = int(stream.frames or 0) or int(round(duration * fps))
    if frames > lim.max_frames:
        raise ClipError(
            f"the clip declares {frames} frames, over the limit input.max_frames = {lim.max_frames}; "
            "raise input.max_frames to accept it"
        )


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    raise ClipError("the container states no duration; remux it (ffmpeg -i in -c copy out.mp4)")


# Packets demuxed ahead of the one being decoded, to learn which frame follows it on
# screen; more than any B-frame reordering depth.
_LOOKAHEAD_PACKETS = 16


def _decoded(container, stream, targets: np.ndarray, skip_unpicked: bool) -> Iterator[object]:
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
        lo = -float("inf") if bisect.bisect_left(seen, f) == 0 else f - _EPS_S
        i = bisect.bisect_left(ts, lo)
        return i < len(ts) and ts[i] < nxt - _EPS_S

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


def _frames_at(container, stream, targets: np.ndarray, skip_unpicked: bool = False) -> Iterator[tuple[int, object]]:
    """(target index, frame on screen at that time), decoding no further than needed.
    Frames stop at the end of the stream or at the first packet FFmpeg cannot decode (a
    file cut short ends in one); targets past the last good frame fail the clip."""
    import av

    ti, prev, broken = 0, None, None
    frames = _decoded(container, stream, targets, skip_unpicked)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            broken = f" (then FFmpeg: {exc.strerror or exc})"
            break
        t = frame.time if frame.time is not None else 0.0
        while ti < len(targets) and targets[ti] < t - _EPS_S:
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


def decode_clip(uri: str, cfg: Config, data: bytes | None = None) -> dict:
    """Decode one video by the plan (from `uri`, or from `data` when the clip came out of
    a tar shard); returns the decode columns of its row."""
    import av

    try:
        container, handle = _open(uri, cfg, data)
    except av.error.FFmpegError as exc:
        raise ClipError(
            f"not a readable video (FFmpeg: {exc.strerror or exc}): truncated, damaged, or not a "
            "video at all; re-download or re-encode it"
        ) from None
    try:
        if not container.streams.video:
            raise ClipError("no video stream; expected a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.decode.ffmpeg_threads
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        duration = _duration_s(container, stream)
        _check_header(cfg, stream, duration, fps)
        plan: FramePlan = make_plan(cfg.mode, cfg.plan, duration, fps)
        frames = np.empty((len(plan.ts_s), cfg.decode.height, cfg.decode.width, 3), np.uint8)
        last_src, last_img = None, None
        scaler = av.video.reformatter.VideoReformatter()
        try:
            for i, frame in _frames_at(container, stream, plan.ts_s, cfg.decode.skip_unpicked):
                if frame is not last_src:  # a frame picked twice is converted once
                    last_src = frame
                    last_img = fit_frame(frame, cfg.decode.width, cfg.decode.height, cfg.decode.fit, scaler)
                frames[i] = last_img
        except av.error.FFmpegError as exc:
            raise ClipError(f"decoding failed ({exc.strerror or exc}); the file is damaged") from None
        return decoded_row(frames, plan, duration, fps, cfg, uri)
    finally:
        container.close()
        if handle is not None:
            handle.close()


def _is_dir(uri: str, cfg: Config) -> bool:
    if storage.is_local(uri):
        return os.path.isdir(uri.removeprefix("file://"))
    fs, path = storage.filesystem(uri, cfg)
    return fs.isdir(path)


def _load_image(fs, path: str, size: int | None, cfg: Config):
    """One frame image as an av.VideoFrame (RGB), checked against the input limits from
    its header before its pixels are decoded."""
    import av
    from PIL import Image

    name = posixpath.basename(path)
    if size is not None:
        _check_size(size, cfg, f"image {name}")
    data = fs.cat_file(path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            lim = cfg.input
            if w > lim.max_width or h > lim.max_height:
                raise ClipError(
                    f"image {name} is {w}x{h}, over the limit input.max_width x input.max_height = "
                    f"{lim.max_width}x{lim.max_height}; raise input.max_width / input.max_height to accept it"
                )
            rgb = np.asarray(im.convert("RGB"))
    except ClipError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        raise ClipError(
            f"unreadable image {name} ({type(exc).__name__}: {storage.scrub(str(exc))}); "
            "re-extract or remove the frame"
        ) from None
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def decode_frames(uri: str, cfg: Config) -> dict:
    """Decode a clip stored as a folder of images (sorted by name, numbers in natural
    order; `input.frame_folder_fps` frames per second) by the same temporal plan as a
    video: the image on screen at each planned time, resized the same way."""
    fs, path = storage.filesystem(uri, cfg)
    entries = [e for e in fs.ls(path, detail=True)
               if e.get("type") == "file" and fm.has_suffix(e["name"], fm.IMAGE_SUFFIXES)]
    if not entries:
        raise ClipError(
            f"no video and no frame images here; expected a video file or a folder of "
            f"{'/'.join(s.lstrip('.') for s in fm.IMAGE_SUFFIXES)} frames"
        )
    entries.sort(key=lambda e: fm.natural_key(posixpath.basename(e["name"].rstrip("/"))))
    n, fps = len(entries), float(cfg.input.frame_folder_fps)
    duration = n / fps
    lim = cfg.input
    if n > lim.max_frames:
        raise ClipError(f"the folder holds {n} frames, over the limit input.max_frames = {lim.max_frames}; raise input.max_frames to accept it")
    if duration > lim.max_duration_s:
        raise ClipError(
            f"duration {duration:.1f} s ({n} frames at input.frame_folder_fps = {fps:g}) is over the limit "
            f"input.max_duration_s = {lim.max_duration_s:g}; raise input.max_duration_s to accept it"
        )
    plan: FramePlan = make_plan(cfg.mode, cfg.plan, duration, fps)
    # The image on screen at time t: frame k covers [k/fps, (k+1)/fps).
    picks = np.minimum(np.floor((plan.ts_s + _EPS_S) * fps).astype(np.int64), n - 1)
    frames = np.empty((len(plan.ts_s), cfg.decode.height, cfg.decode.width, 3), np.uint8)
    last_k, last_img = -1, None
    for i, k in enumerate(picks):
        if k != last_k:  # an image picked twice is read and converted once
            e = entries[k]
            frame = _load_image(fs, e["name"], e.get("size"), cfg)
            last_k, last_img = k, fit_frame(frame, cfg.decode.width, cfg.decode.height, cfg.decode.fit)
        frames[i] = last_img
    return decoded_row(frames, plan, duration, fps, cfg, uri)


def _shard_member(uri: str, cfg: Config) -> tuple[str, str] | None:
    """('s3://b/shard.tar', 'key.mp4') for a tar member URI, else None."""
    base, sep, member = uri.partition("#")
    if sep and member and fm.has_suffix(base, fm.SHARD_SUFFIXES):
        return base, member
    return None


def read_shard_member(shard_uri: str, member: str, cfg: Config) -> bytes:
    """One member's bytes, streaming through the shard (for clips retried by URI)."""
    import tarfile

    if fm.member_escapes(member):
        raise ClipError(f"tar member name {member!r} escapes the shard; it is never read")
    fs, path = storage.filesystem(shard_uri, cfg)
    with fs.open(path, "rb", block_size=8 << 20, cache_type="readahead") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for m in tar:
            if m.name == member and m.isfile():
                _check_size(m.size, cfg, "video member")
                return tar.extractfile(m).read()
    raise ClipError(f"member {member!r} is not in the shard")


def decode_any(uri: str, cfg: Config, data: bytes | None = None) -> dict:
    """A clip from wherever it is: bytes from a tar shard, a video file or object, a tar
    member named by URI (shard#member), or a folder of frames."""
    if data is not None:
        return decode_clip(uri, cfg, data=data)
    if fm.has_suffix(uri, fm.VIDEO_SUFFIXES):
        member = _shard_member(uri, cfg)
        if member is not None:
            return decode_clip(uri, cfg, data=read_shard_member(*member, cfg))
        return decode_clip(uri, cfg)
    if _is_dir(uri, cfg):
        return decode_frames(uri, cfg)
    return decode_clip(uri, cfg)


def _as_bytes(value) -> bytes | None:
    """A row's `data` cell: bytes, or None (a column of nulls can arrive as NaNs once an
    upstream operator has rebuilt the block)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def clip_error(exc: BaseException, uri: str) -> BaseException:
    """The exception to record for a clip: storage errors become ClipErrors that say
    what to check; every message is scrubbed of credentials."""
    if isinstance(exc, ClipError):
        msg = storage.scrub(str(exc))
        return exc if msg == str(exc) else ClipError(msg)
    if isinstance(exc, FileNotFoundError):
        return ClipError("not found: no such file or object (listed but missing?); check the listing or manifest, or restore the clip")
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and not storage.is_local(uri)):
        return ClipError(str(storage.explain(exc, uri, "reading")))
    msg = storage.scrub(str(exc))
    if msg != str(exc):
        return ClipError(f"{type(exc).__name__}: {msg}")
    return exc


class DecodeStage(Stage):
    name = "decode"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.gpu = None
        if cfg.decode.device == "cuda":
            from emodist.stages.gpu_decode import GpuDecoder

            self.gpu = GpuDecoder(cfg)
        self._empty = {
            col.FRAMES: np.zeros((0, cfg.decode.height, cfg.decode.width, 3), np.uint8),
            col.FRAME_TS: np.zeros(0, np.float64),
            col.FRAME_GAP: np.zeros(0, np.int32),
            col.DURATION_S: float("nan"),
            col.NATIVE_FPS: float("nan"),
        }

    def process(self, batch: Batch, rows: np.ndarray) -> Batch:
        n = len(batch[col.CLIP_ID])
        out = {k: [v] * n for k, v in self._empty.items()}
        data = batch.pop(DATA, None)  # clip bytes from tar shards go no further than here
        devices = ["cpu"] * n
        for i in rows:
            uri = str(batch[col.URI][i])
            clip_bytes = _as_bytes(data[i]) if data is not None else None
            try:
                decoded, devices[i] = self._decode(uri, clip_bytes)
            except Exception as exc:  # noqa: BLE001 - one bad clip fails alone
                mark_failed(batch, int(i), self.name, clip_error(exc, uri))
                continue
            for k, v in decoded.items():
                out[k][i] = v
        for k in (col.FRAMES, col.FRAME_TS, col.FRAME_GAP):
            batch[k] = object_column(out[k])
        batch[col.DURATION_S] = np.asarray(out[col.DURATION_S], dtype=np.float64)
        batch[col.NATIVE_FPS] = np.asarray(out[col.NATIVE_FPS], dtype=np.float64)
        batch[col.DECODE_DEVICE] = np.array(devices, dtype=object)
        return batch

    def _decode(self, uri: str, data: bytes | None) -> tuple[dict, str]:
        """(decode columns, device): the GPU when configured and able, else the CPU."""
        # Video files and in-memory clips go to the GPU; frame folders and shard#member
        # URIs (read on the CPU anyway) stay on the CPU path.
        if self.gpu is not None and (data is not None or (fm.has_suffix(uri, fm.VIDEO_SUFFIXES) and "#" not in uri)):
            from emodist.stages.gpu_decode import GpuUnsupported

            try:
                return self.gpu.decode(uri, data), "cuda"
            except GpuUnsupported as why:
                log.info("decode: %s: on CPU: %s", storage.scrub(uri), why)
                return decode_any(uri, self.cfg, data), "cpu-fallback"
        return decode_any(uri, self.cfg, data), "cpu"

