import pytest

from emodist.config import ConfigError, load_config


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg.mode == "msce"
    assert (cfg.plan.keyframe_interval_s, cfg.plan.inbetween_per_gap, cfg.plan.inbetween_step_s) == (1.0, 4, 0.25)
    assert cfg.label_names == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    # the embedded default gives real labels offline: face detector + expression CNN,
    # describer and labeler in one actor
    assert (cfg.labeler.backend, cfg.labeler.model) == ("specialist", "face-api-expression")
    assert (cfg.describer.backend, cfg.describer.model) == ("specialist", "face-api-expression") and cfg.shares_model


def test_yaml_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("mode: sparse\nlabels: mafw\ndecode:\n  width: 336\n")
    cfg = load_config(f, ["decode.height=336", "labeler.batch_size=8", "labels=[happy, sadness, neutral]"])
    assert cfg.mode == "sparse" and cfg.decode.width == 336 and cfg.decode.height == 336
    assert cfg.labeler.batch_size == 8
    assert cfg.label_names == ("happy", "sad", "neutral")  # synonyms folded


@pytest.mark.parametrize(
    "override, needle",
    [
        ("decode.fsp=2", "unknown config key 'decode.fsp'; allowed under 'decode': "),
        ("nope=1", "unknown config key 'nope'"),
        ("plan.keyframe_interval_s=-1", "config key 'plan.keyframe_interval_s'"),
        ("mode=video", "config key 'mode'"),
        ("labels=imagenet", "unknown label set 'imagenet'"),
        ("plan.inbetween_per_gap=8", "exceeds keyframe_interval_s"),
        ("decode.width", "expected key=value"),
        ("labeler.prior=[0, 0, 0, 0, 0, 0, 0]", "labeler.prior [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] needs weights >= 0 and at least one above 0"),
        ("labeler.prior=[0.5, -0.1, 0.2, 0.1, 0.1, 0.1, 0.1]", "needs weights >= 0"),
    ],
)
def test_bad_keys_give_one_line_errors(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="width, height"):
        load_config(None, ["decode.widht=3"])


def test_hash_ignores_resources_but_not_labels_or_models():
    base = load_config()
    assert load_config(None, ["decode.actors=4", "labeler.batch_size=32", "run.part_rows=9"]).digest() == base.digest()
    assert load_config(None, ["decode.width=336"]).digest() != base.digest()
    assert load_config(None, ["labeler.model=/models/x"]).digest() != base.digest()
    assert load_config(None, ["labels=mafw"]).digest() != base.digest()


def test_ffmpeg_threads_follow_the_decode_actors_cpu_share():
    """0 = one thread per CPU the decode actor holds: FFmpeg's own choice (one per core of
    the node) in every actor oversubscribes a node that runs several of them."""
    assert load_config(None, []).decode.ffmpeg_threads == 1
    assert load_config(None, ["decode.num_cpus=0.5"]).decode.ffmpeg_threads == 1
    assert load_config(None, ["decode.num_cpus=2.5"]).decode.ffmpeg_threads == 3
    assert load_config(None, ["decode.num_cpus=0.5", "decode.threads=4"]).decode.ffmpeg_threads == 4


def test_how_frames_are_decoded_is_not_hashed():
    """Threads and skipped non-reference frames give the same frames: same config_hash."""
    base = load_config(None, [])
    assert load_config(None, ["decode.threads=3", "decode.skip_unpicked=false"]).digest() == base.digest()
