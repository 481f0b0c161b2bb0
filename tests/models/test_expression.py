"""face-api's expression classifier in torch: weights, a golden check against face-api
itself, and the expected reading of the Pexels video."""
from __future__ import annotations


import numpy as np
import pytest



# Outputs of @vladmandic/face-api 1.7.15 itself (FaceExpressionNet.forwardInput, tfjs
# 4.22 cpu backend, in node) for the deterministic inputs of `_golden_inputs`.
FACE_API_GOLDEN = {
    "noise": [0.3522087037563324, 0.04912109673023224, 0.40506255626678467, 0.05330101400613785,
              0.010384385474026203, 0.02676360495388508, 0.1031586155295372],
    "gradient": [0.702490508556366, 0.1970447152853012, 0.008512351661920547, 0.07414883375167847,
                 0.00025020158500410616, 0.0033854423090815544, 0.014167912304401398],
    "noise_112x79": [0.3407285809516907, 0.2992366552352905, 0.1784805804491043, 0.07697941362857819,
                     0.025754235684871674, 0.005153954494744539, 0.07366659492254257],
}


def _golden_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:112, 0:112]
    gradient = np.stack([(yy * 2) % 256, (xx * 2) % 256, (yy + xx) % 256], -1).astype(np.uint8)
    narrow = rng.integers(0, 256, (112, 79, 3), dtype=np.uint8)  # padded to square, odd split
    return {"noise": noise, "gradient": gradient, "noise_112x79": narrow}


@pytest.fixture(scope="module")
def clf(fetched):
    from emodist.models.expression import ExpressionClassifier

    return ExpressionClassifier(batch_size=16)


def test_manifest_weights_fit_the_architecture_exactly(fetched):
    from emodist.models.expression import check_weights, expected_shapes, load_tfjs_weights

    weights = load_tfjs_weights(fetched["face_expression_manifest"])
    check_weights(weights)  # raises on missing, unused or misshapen weights
    assert set(weights) == set(expected_shapes()) and len(weights) == 49
    n_quantised = sum(w.size for k, w in weights.items() if not k.endswith("bias"))
    n_float = sum(w.size for k, w in weights.items() if k.endswith("bias"))
    assert n_quantised + 4 * n_float == fetched["face_expression_model"].stat().st_size
    extra = dict(weights, **{"dense4/conv0/bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="unused.*dense4"):
        check_weights(extra)


def test_matches_face_api_on_golden_inputs(clf):
    inputs = _golden_inputs()
    for name, want in FACE_API_GOLDEN.items():
        got = clf.predict(inputs[name][None])[0]
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=name)


def test_predict_shapes_and_batches(clf):
    x = np.repeat(_golden_inputs()["noise"][None], 37, axis=0)
    p = clf.predict(x)
    assert p.shape == (37, 7) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    assert np.ptp(p, axis=0).max() < 1e-5  # batching does not change the answer
    assert clf.predict(x[:0]).shape == (0, 7)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict(x.astype(np.float32))


def test_label_mapping():
    from emodist.labels import MAFW
    from emodist.models.expression import CLASSES, FACE_API_CLASSES, to_labels

    assert CLASSES == ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
    assert len(FACE_API_CLASSES) == 7 and FACE_API_CLASSES[4] == "fearful"
    p = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.05, 0.05]])
    mafw = to_labels(p, MAFW)
    assert mafw.shape == (1, 11) and mafw[0, 7:].sum() == 0 and mafw.sum() == pytest.approx(1)
    two = to_labels(p, ["happiness", "sadness"])  # synonyms; renormalised over the two
    np.testing.assert_allclose(two, [[0.5 / 0.6, 0.1 / 0.6]])
    with pytest.raises(ValueError, match="none of the labels"):
        to_labels(p, ["contempt", "anxiety"])


def _pexels_crops(fetched, start_s: float, end_s: float, step_s: float = 0.5) -> np.ndarray:
    import av

    from emodist.models.face import FaceCropper

    frames, nxt = [], start_s
    with av.open(str(fetched["pexels_video"])) as c:
        c.streams.video[0].thread_type = "AUTO"
        for f in c.decode(video=0):
            if f.time >= end_s:
                break
            if f.time >= nxt - 1e-3:
                frames.append(f.to_ndarray(format="rgb24"))
                nxt += step_s
    return FaceCropper().crop_clip(np.stack(frames)).crops


def test_pexels_reads_sad_early_and_happy_at_14s(fetched, clf):
    from emodist.models.expression import CLASSES

    sad, happy = CLASSES.index("sad"), CLASSES.index("happy")
    early = clf.predict(_pexels_crops(fetched, 0.0, 3.0))
    late = clf.predict(_pexels_crops(fetched, 12.5, 15.5))
    assert early.mean(0).argmax() == sad and early[:, sad].mean() > 5 * early[:, happy].mean()
    assert (early.argmax(1) == sad).mean() >= 0.8
    assert late.mean(0).argmax() == happy and (late.argmax(1) == happy).mean() >= 0.8
