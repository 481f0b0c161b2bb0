"""Opening one clip: what is not a regular file is said so, and never read."""
import os
import shutil
import signal

import numpy as np
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.io.source import list_clips
from emodist.stages.decode import DecodeStage
from tests.conftest import stage_rows


def test_a_named_pipe_in_an_input_folder_fails_alone_unread_and_is_not_called_empty(tmp_path, clips_dir):
    shutil.copy(clips_dir / "clip_00000.mp4", tmp_path / "a.mp4")
    fifo = tmp_path / "b.mp4"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait forever
    listed = list_clips(str(tmp_path)).to_pylist()
    assert [r["clip_id"] for r in listed] == ["a", "b"]
    batch = {col.CLIP_ID: np.array([r["clip_id"] for r in listed], dtype=object),
             col.URI: np.array([r["uri"] for r in listed], dtype=object)}

    def hung(*_):
        raise AssertionError("the decoder blocked on the named pipe")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        rows = stage_rows(DecodeStage(load_config(None, ["mode=sparse"]))(batch))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert rows["a"][col.ERROR_STAGE] == ""
    assert rows["b"][col.ERROR_TYPE] == "ClipError"
    assert rows["b"][col.ERROR_MESSAGE] == (
        f"decode: {fifo}: not a regular file but a named pipe (FIFO); skipped unread: "
        "replace it with the video file or move it out of the input"
    )


def test_a_symlink_loop_in_an_input_folder_is_named_as_one_not_as_errno_40(tmp_path, clips_dir):
    shutil.copy(clips_dir / "clip_00000.mp4", tmp_path / "a.mp4")
    os.symlink("b.mp4", tmp_path / "b.mp4")  # b.mp4 -> b.mp4
    listed = list_clips(str(tmp_path)).to_pylist()
    assert [r["clip_id"] for r in listed] == ["a", "b"]
    batch = {col.CLIP_ID: np.array([r["clip_id"] for r in listed], dtype=object),
             col.URI: np.array([r["uri"] for r in listed], dtype=object)}
    rows = stage_rows(DecodeStage(load_config(None, ["mode=sparse"]))(batch))
    assert rows["a"][col.ERROR_STAGE] == ""
    message = rows["b"][col.ERROR_MESSAGE]
    assert "a symbolic link that loops" in message and "point the link at the video file" in message
    assert "Errno" not in message and "re-encode" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_an_unreadable_file_says_permission_denied_not_re_encode(tmp_path, clips_dir):
    clip = tmp_path / "a.mp4"
    shutil.copy(clips_dir / "clip_00000.mp4", clip)
    clip.chmod(0)
    batch = {col.CLIP_ID: np.array(["a"], dtype=object), col.URI: np.array([str(clip)], dtype=object)}
    rows = stage_rows(DecodeStage(load_config(None, ["mode=sparse"]))(batch))
    message = rows["a"][col.ERROR_MESSAGE]
    assert "permission denied" in message and "make it readable" in message and "re-encode" not in message
