"""Object-storage fixtures (imported by conftest.py): one real S3 server per session,
credentials in the standard AWS variables, and the same small dataset in every input
format, on local disk and in a bucket.

The pipeline's credentials are set as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY by an
autouse session fixture, before any test starts Ray, so Ray's workers inherit them the
way they would on a cluster node. The secret is distinctive so tests can grep for it.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

S3_KEY = "EMODISTPIPELINEKEY01"
S3_SECRET = f"emodistSecret{uuid.uuid4().hex}"
DATA_BUCKET, OUT_BUCKET = "emodist-data", "emodist-out"
PUBLIC_BUCKET, LOCKED_BUCKET = "emodist-public", "emodist-locked"
_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
             "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session", autouse=True)
def s3_credentials():
    """The pipeline's S3 credentials, as the standard variables (restored at the end)."""
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    for k in _AWS_VARS:
        os.environ.pop(k, None)
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1")
    yield S3_KEY, S3_SECRET
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@dataclass
class S3:
    server: object  # s3_server.S3Server
    endpoint: str
    kind: str

    @property
    def admin(self):
        return self.server.fs()

    def config(self, *overrides: str):
        """tiny_config pointed at this server (credentials come from the environment)."""
        from tests.conftest import tiny_config

        return tiny_config(f"storage.endpoint_url={self.endpoint}", "storage.region=us-east-1",
                            "storage.retries=1", *overrides)


@pytest.fixture(scope="session")
def s3(tmp_path_factory, s3_credentials) -> S3:
    """SeaweedFS (moto_server if weed cannot start) for the whole session."""
    from tests import s3_server

    server = s3_server.start(
        tmp_path_factory.mktemp("s3"), user_key=S3_KEY, user_secret=S3_SECRET,
        user_buckets=[DATA_BUCKET, OUT_BUCKET], public_buckets=[PUBLIC_BUCKET],
        other_buckets=[LOCKED_BUCKET],
    )
    yield S3(server, server.endpoint, server.kind)
    server.stop()


# --- one dataset in every format ---------------------------------------------------------


def write_frame_folder(video: Path, out: Path, ext: str = "jpg") -> int:
    """Every frame of `video` as 1.jpg, 2.jpg, ... (not zero-padded, like DFEW)."""
    import av

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(video)) as c:
        for n, frame in enumerate(c.decode(video=0), 1):
            frame.to_image().save(out / f"{n}.{ext}")
    return n


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@dataclass
class FormatData:
    root: Path
    media: Path  # videos/ (3 videos) and frames/ (2 frame folders + 1 with an unreadable image)
    shards: Path  # 2 tar shards: 3 clips and 2 unsafe member names
    split: Path  # DFEW-style split file: 2 good lines, 1 that does not parse, 1 missing clip
    reference: Path  # csv manifest of every good clip above on local disk, with the ids each input gives
    expected: dict  # input -> {clip_id: ref_label} of the clips that must be labeled


@pytest.fixture(scope="session")
def format_data(tmp_path_factory, clips_dir) -> FormatData:
    """The synthetic clips spread over the four formats (videos, frame folders, tar
    shards, a split file), on local disk."""
    root = tmp_path_factory.mktemp("formats")
    clips = sorted(clips_dir.glob("clip_*.mp4"))
    ref_rows, expected = [], {}

    media = root / "media"
    (media / "videos").mkdir(parents=True)
    expected["media"] = {}
    for p in clips[0:3]:
        shutil.copy(p, media / "videos" / p.name)
        ref_rows.append((f"videos/{p.stem}", str(media / "videos" / p.name)))
        expected["media"][f"videos/{p.stem}"] = ""
    for p in clips[3:5]:
        write_frame_folder(p, media / "frames" / p.stem)
        ref_rows.append((f"frames/{p.stem}", str(media / "frames" / p.stem)))
        expected["media"][f"frames/{p.stem}"] = ""
    broken = media / "frames" / "clip_broken"
    write_frame_folder(clips[3], broken, "png")
    (broken / "26.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really an image")  # the keyframe at 1 s

    shards = root / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-000000.tar", "w") as tar:
        _add(tar, f"{clips[5].stem}.mp4", clips[5].read_bytes())
        _add(tar, f"{clips[5].stem}.json", json.dumps({"label": "happy"}).encode())
        _add(tar, f"{clips[6].stem}.mp4", clips[6].read_bytes())
        _add(tar, f"{clips[6].stem}.cls", b"1")  # index 1 of the dfew label set: sad
    with tarfile.open(shards / "shard-000001.tar", "w") as tar:
        _add(tar, "../escape.mp4", clips[0].read_bytes())
        _add(tar, f"{clips[7].stem}.mp4", clips[7].read_bytes())
        _add(tar, f"{clips[7].stem}.txt", b"Anger\n")
        _add(tar, "/abs/escape.mp4", clips[1].read_bytes())
    for shard, clip in (("shard-000000.tar", clips[5]), ("shard-000000.tar", clips[6]), ("shard-000001.tar", clips[7])):
        ref_rows.append((f"{shard.removesuffix('.tar')}/{clip.stem}", f"{shards / shard}#{clip.stem}.mp4"))
    # a shard member's id: shard name / member key (the same key in two shards are two clips)
    expected["webdataset"] = {f"shard-000000/{clips[5].stem}": "happy", f"shard-000000/{clips[6].stem}": "sad",
                              f"shard-000001/{clips[7].stem}": "angry"}

    split_dir = root / "split"
    (split_dir / "clips").mkdir(parents=True)
    n8 = write_frame_folder(clips[8], split_dir / "clips" / clips[8].stem)
    shutil.copy(clips[9], split_dir / "clips" / clips[9].name)
    split = split_dir / "dfew_set_1_test.txt"
    split.write_text(
        f"clips/{clips[8].stem} {n8} 6\n"          # a frame folder; 6 = disgust in DFEW's codes
        f"clips/{clips[9].name} 100 1\n"          # a video; 1 = happy
        "clips/clip_bad_line 12 frames 3\n"       # line 3: four fields, does not parse
        "clips/clip_missing.mp4 50 2\n"           # listed but missing
    )
    ref_rows.append((f"clips/{clips[8].stem}", str(split_dir / "clips" / clips[8].stem)))
    ref_rows.append((f"clips/{clips[9].stem}", str(split_dir / "clips" / clips[9].name)))
    expected["split"] = {f"clips/{clips[8].stem}": "disgust", f"clips/{clips[9].stem}": "happy"}

    reference = root / "reference.csv"
    reference.write_text("clip_id,uri\n" + "".join(f"{cid},{uri}\n" for cid, uri in ref_rows))
    return FormatData(root, media, shards, split, reference, expected)


@pytest.fixture(scope="session")
def s3_formats(s3, format_data) -> str:
    """format_data uploaded to s3://emodist-data/formats/ (returns that URI)."""
    from tests import s3_server

    fs = s3.admin
    for sub in ("media", "shards", "split"):
        s3_server.upload_tree(fs, format_data.root / sub, f"{DATA_BUCKET}/formats/{sub}")
    return f"s3://{DATA_BUCKET}/formats"


def solid_frames(folder: Path, n: int, size: int = 32, ext: str = "png") -> Path:
    """n images whose pixel value is the frame's index (1.png = 0, 2.png = 1, ...)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(np.full((size, size, 3), k, np.uint8)).save(folder / f"{k + 1}.{ext}")
    return folder
