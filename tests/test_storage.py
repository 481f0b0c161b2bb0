"""Object storage against a real S3 server (SeaweedFS; see tests/s3_server.py): storage
options, secrets, refused access, atomic parts, and the whole pipeline reading every
input format from a bucket and writing its rows back to one."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tests.conftest import CONFIGS, stage_rows
from tests.conftest_s3 import DATA_BUCKET, LOCKED_BUCKET, OUT_BUCKET, PUBLIC_BUCKET, S3, S3_KEY, S3_SECRET

from emodist.output import carry
from emodist import schema as col
from emodist import storage
from emodist.config import load_config
from emodist.io.source import open_source
from emodist.storage import SourceError
from emodist.stages.base import ClipError
from emodist.decoders import decode
from emodist.decoders.pyav import decode_clip
from emodist.stages.decode import DecodeStage
from emodist.storage import StorageError
from emodist.output.writer import PartWriter

# --- without a server ---------------------------------------------------------------------


def test_storage_options_come_from_the_config_and_hold_no_secrets():
    cfg = load_config(None, ["storage.endpoint_url=http://127.0.0.1:9", "storage.region=eu-west-3",
                             "storage.profile=lab", "storage.retries=2"])
    opts = storage.storage_options(cfg, "s3://b/k")
    assert opts["endpoint_url"] == "http://127.0.0.1:9" and opts["client_kwargs"] == {"region_name": "eu-west-3"}
    assert opts["profile"] == "lab" and opts["anon"] is False
    assert opts["config_kwargs"]["retries"] == {"max_attempts": 3, "mode": "standard"}
    assert opts["config_kwargs"]["connect_timeout"] > 0 and opts["config_kwargs"]["read_timeout"] > 0
    assert storage.storage_options(load_config(None, ["storage.anon=true"]), "gs://b/k")["token"] == "anon"
    assert storage.storage_options(cfg, "/local/path") == {}
    assert S3_SECRET not in repr(opts) and S3_SECRET not in repr(cfg.model_dump())


def test_scrub_removes_credentials_from_messages():
    text = (f"GET http://AKIA1:{S3_SECRET}@host/b/k failed; url=https://h/o?X-Amz-Credential=AKIA%2F1&"
            f"X-Amz-Signature=abcdef0123&x=1 opts={{'key': 'AKIA1', 'secret': 'hunter22'}} "
            f"aws_secret_access_key={S3_SECRET} env value {S3_SECRET} and {S3_KEY}")
    out = storage.scrub(text)
    for leak in (S3_SECRET, "hunter22", "abcdef0123", S3_KEY, "AKIA%2F1"):
        assert leak not in out, leak
    assert "http://***@host/b/k" in out and "x=1" in out


def test_scrub_all_removes_each_kind_of_credential_alone_and_leaves_plain_paths(monkeypatch):
    """scrub_all reads the environment's secrets once for many texts and skips the
    patterns where no credential can be: each pattern's case alone must still go."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    cases = {f"s3://AKIA1:{S3_SECRET}@host/b/k.mp4": S3_SECRET, "see AKIA1:hunter22@host.example": "hunter22",
             "https://h/o.mp4?sig=abcdef0123": "abcdef0123", "opts secret: hunter22 x": "hunter22",
             "token=abc123456": "abc123456", "{'password': 'p4ssw0rd99'}": "p4ssw0rd99",
             f"/data/{S3_SECRET}/clip.mp4": S3_SECRET}
    plain = ["/data/dfew/happy/0001.mp4", "s3://bucket/Scene/Class/0001.mp4", "relative/x y.avi", ""]
    out = list(storage.scrub_all([*cases, *plain]))
    assert out == [storage.scrub(t) for t in [*cases, *plain]]
    for leak, scrubbed in zip(cases.values(), out):
        assert leak not in scrubbed, scrubbed
    assert out[len(cases):] == plain


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_output_that_is_a_file_is_named_with_the_fix_not_the_endpoint(tmp_path, clips_dir, where):
    from typer.testing import CliRunner

    from emodist.cli import app

    blocker = tmp_path / "results"
    blocker.write_text("not a folder\n")
    out = blocker if where == "file" else blocker / "run1"
    res = CliRunner().invoke(app, ["run", "--input", str(clips_dir), "--output", str(out), "--quiet"])
    problem = "is a file, not a folder" if where == "file" else f"{blocker} is a file, not a folder"
    assert res.exit_code == 2, res.output
    assert res.output == f"error: {out}: {problem}; choose a folder for --output\n"


def test_a_read_only_output_says_permission_denied_and_to_choose_a_writable_output(tmp_path, monkeypatch):
    import fsspec.implementations.local as local

    # Tests run as root, whom no mode bits refuse: the refusal the file system would give.
    def refuse(self, path, exist_ok=False):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(local.LocalFileSystem, "makedirs", refuse)
    out = tmp_path / "ro" / "out"
    with pytest.raises(StorageError) as e:
        storage.check_writable(str(out), load_config())
    assert str(e.value) == f"{out}: permission denied; choose a writable --output, or make it writable"


# --- the server ----------------------------------------------------------------------------


def test_server_is_seaweedfs(s3):
    if s3.kind != "seaweedfs":
        pytest.skip(f"weed did not start; running on {s3.kind} (see the server log)")
    assert s3.endpoint.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("fmt, sub", [("media", "media"), ("videos", "media/videos"), ("frames", "media/frames"),
                                      ("webdataset", "shards"), ("split", "split/dfew_set_1_test.txt")])
def test_s3_listing_gives_the_local_listing(s3, format_data, s3_formats, fmt, sub):
    """Same clip ids, labels and failures from the bucket as from local disk, for each
    format (each input format read as Ray's read tasks read it, in this process)."""
    local = format_data.root / sub
    remote = f"{s3_formats}/{sub}"
    cfg = s3.config(f"input.format={'auto' if fmt == 'media' else fmt}")

    def listed(uri):
        rs = list(open_source(uri, cfg).rows())
        return ({r[col.CLIP_ID]: r[col.REF_LABEL] for r in rs if not r[col.ERROR_STAGE]},
                sorted(r[col.CLIP_ID] for r in rs if r[col.ERROR_STAGE]),
                {r[col.CLIP_ID]: r[col.URI] for r in rs})

    (lgood, lbad, luris), (rgood, rbad, ruris) = listed(str(local)), listed(remote)
    assert lgood == rgood and lbad == rbad
    if fmt in format_data.expected:
        assert format_data.expected[fmt].items() <= rgood.items()
    if fmt in ("videos", "frames"):  # one format alone finds only its own clips
        assert set(rgood) == {k.split("/", 1)[1] for k in format_data.expected["media"] if k.startswith(fmt)} | (
            {"clip_broken"} if fmt == "frames" else set())
    lroot = local.parent if local.is_file() else local
    rroot = remote.rsplit("/", 1)[0] if local.is_file() else remote
    for cid, uri in ruris.items():
        assert uri.startswith(f"s3://{DATA_BUCKET}/formats/")
        assert uri.removeprefix(rroot) == luris[cid].removeprefix(str(lroot))


def test_anonymous_access_reads_a_public_bucket_only(s3, clips_dir):
    s3.admin.put_file(str(clips_dir / "clip_00000.mp4"), f"{PUBLIC_BUCKET}/pub/a.mp4")
    s3.admin.put_file(str(clips_dir / "clip_00000.mp4"), f"{DATA_BUCKET}/private/a.mp4")
    anon = s3.config("storage.anon=true", "mode=sparse")
    rows = list(open_source(f"s3://{PUBLIC_BUCKET}/pub", anon).rows())
    assert [r[col.CLIP_ID] for r in rows] == ["a"]
    assert decode(rows[0][col.URI], anon)[0][col.FRAMES].shape[0] > 0
    if s3.kind == "seaweedfs":
        with pytest.raises(StorageError, match=f"access denied reading bucket '{DATA_BUCKET}'"):
            open_source(f"s3://{DATA_BUCKET}/private", anon)


def test_profile_and_standard_variables(s3, monkeypatch, tmp_path, clips_dir):
    s3.admin.put_file(str(clips_dir / "clip_00001.mp4"), f"{DATA_BUCKET}/prof/b.mp4")
    creds = tmp_path / "credentials"
    creds.write_text(f"[lab]\naws_access_key_id = {S3_KEY}\naws_secret_access_key = {S3_SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    rows = list(open_source(f"s3://{DATA_BUCKET}/prof", s3.config("storage.profile=lab")).rows())
    assert [r[col.CLIP_ID] for r in rows] == ["b"]
    # endpoint and region from AWS_ENDPOINT_URL / AWS_REGION when the config leaves them empty
    monkeypatch.setenv("AWS_PROFILE", "lab")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from tests.conftest import tiny_config

    rows = list(open_source(f"s3://{DATA_BUCKET}/prof", tiny_config()).rows())
    assert [r[col.CLIP_ID] for r in rows] == ["b"]


def test_a_bucket_that_denies_access_is_a_clear_error_at_start(s3, tmp_path, clips_dir):
    if s3.kind != "seaweedfs":
        pytest.skip("moto accepts every request")
    from emodist.pipeline import run

    s3.admin.put_file(str(clips_dir / "clip_00000.mp4"), f"{LOCKED_BUCKET}/clips/a.mp4")
    cfg = s3.config("mode=sparse")
    t0 = time.perf_counter()
    with pytest.raises(SourceError) as e:  # StorageError is a SourceError: the CLI exits 2 with it
        run(cfg, f"s3://{LOCKED_BUCKET}/clips", str(tmp_path / "out"), progress=False)
    msg = str(e.value)
    assert f"access denied reading bucket '{LOCKED_BUCKET}'" in msg
    assert "AWS_ACCESS_KEY_ID" in msg and "storage.endpoint_url" in msg and "policy" in msg
    with pytest.raises(StorageError, match=f"access denied writing to bucket '{LOCKED_BUCKET}'"):
        run(cfg, str(clips_dir / "clip_00000.mp4"), f"s3://{LOCKED_BUCKET}/out", progress=False)
    # (a user limited to some buckets is refused on unknown ones: 403, not 404)
    with pytest.raises(StorageError, match="(access denied reading bucket|bucket) 'no-such-bucket'"):
        open_source("s3://no-such-bucket/clips", cfg)
    assert time.perf_counter() - t0 < 30  # no hang
    assert S3_SECRET not in msg


def test_unreachable_endpoint_fails_in_bounded_time():
    cfg = load_config(None, ["storage.endpoint_url=http://127.0.0.1:9", "storage.retries=1"])
    t0 = time.perf_counter()
    with pytest.raises(StorageError, match="cannot reach storage reading bucket 'b'.*storage.endpoint_url"):
        open_source("s3://b/clips", cfg)
    assert time.perf_counter() - t0 < 60


def test_object_limits_are_checked_from_the_object_and_its_header(s3, clips_dir):
    s3.admin.put_file(str(clips_dir / "clip_00002.mp4"), f"{DATA_BUCKET}/limits/c.mp4")
    uri = f"s3://{DATA_BUCKET}/limits/c.mp4"
    with pytest.raises(ClipError, match="object is .* MiB, over the limit input.max_file_mb = 0.01"):
        decode_clip(uri, s3.config("input.max_file_mb=0.01"))
    with pytest.raises(ClipError, match="over the limit input.max_duration_s = 1; raise input.max_duration_s"):
        decode_clip(uri, s3.config("input.max_duration_s=1"))
    out = DecodeStage(s3.config("mode=sparse"))({
        col.CLIP_ID: np.array(["m"], dtype=object),
        col.URI: np.array([f"s3://{DATA_BUCKET}/limits/missing.mp4"], dtype=object)})
    (row,) = stage_rows(out).values()
    assert row[col.ERROR_TYPE] == "ClipError"
    assert row[col.ERROR_MESSAGE].startswith(f"decode: s3://{DATA_BUCKET}/limits/missing.mp4: not found")


def test_parts_on_s3_are_never_visible_half_written(s3):
    """A reader listing the prefix while parts are written only ever sees whole parts."""
    cfg = s3.config()
    uri = f"s3://{OUT_BUCKET}/atomic/predictions"
    fs = s3.admin
    seen, bad, stop = set(), [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                names = fs.ls(f"{OUT_BUCKET}/atomic/predictions", refresh=True)
            except FileNotFoundError:
                continue
            for name in names:
                seen.add(name)
                try:
                    pq.read_metadata(fs.open(name, "rb"))
                except Exception as exc:  # noqa: BLE001 - any unreadable part is a failure
                    bad.append((name, repr(exc)))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    schema = pa.schema([("clip_id", pa.string()), ("blob", pa.string())])
    w = PartWriter(uri, schema, part_rows=20, storage_options=storage.storage_options(cfg, uri))
    rng = np.random.default_rng(0)
    for i in range(100):  # 5 parts of ~2 MB of incompressible text each
        w.add(pa.Table.from_pylist([{"clip_id": f"c{i}", "blob": rng.bytes(60_000).hex()}], schema=schema))
    w.flush()
    stop.set()
    t.join(10)
    assert not bad
    assert all(Path(n).name.startswith("part-") for n in seen)  # no temporary names
    table = pads.dataset(f"{OUT_BUCKET}/atomic/predictions", filesystem=fs, format="parquet").to_table()
    assert table.num_rows == 100 and w.parts == 5


def test_manifests_on_s3_are_read_by_ray_tasks(ray_local, s3, tmp_path):
    """parquet through ray.data.read_parquet (row groups in parallel), jsonl through the
    line reader; relative uris resolve against the manifest's folder in the bucket."""
    rows = [{"uri": f"v/{i}.mp4", "label": "sad", "clip_id": f"id{i}"} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet", row_group_size=10)
    (tmp_path / "m.jsonl").write_text('{"uri": "/abs/x.mp4"}\nnot json\n')
    s3.admin.put_file(str(tmp_path / "m.parquet"), f"{DATA_BUCKET}/manifests/m.parquet")
    s3.admin.put_file(str(tmp_path / "m.jsonl"), f"{DATA_BUCKET}/manifests/m.jsonl")
    cfg = s3.config()
    got = open_source(f"s3://{DATA_BUCKET}/manifests/m.parquet", cfg).dataset().take_all()
    assert sorted((r[col.CLIP_ID], r[col.URI], r[col.REF_LABEL]) for r in got) == sorted(
        (f"id{i}", f"s3://{DATA_BUCKET}/manifests/v/{i}.mp4", "sad") for i in range(50))
    got = open_source(f"s3://{DATA_BUCKET}/manifests/m.jsonl", cfg).dataset().take_all()
    # rows that failed at listing travel packed into a carrier row (emodist/output/carry.py)
    got = [r for r in got if r[col.ERROR_STAGE] != carry.CARRIED] + [
        x for r in got if r[col.ERROR_STAGE] == carry.CARRIED for x in carry.from_ipc(r[carry.COLUMN]).to_pylist()]
    # a local path that does not exist fails at listing (one stat), not in the decode pool
    assert sorted((r[col.URI], r[col.ERROR_STAGE]) for r in got) == [
        ("/abs/x.mp4", "list"), (f"s3://{DATA_BUCKET}/manifests/m.jsonl", "list")]
    by_uri = {r[col.URI]: r[col.ERROR_MESSAGE] for r in got}
    assert "line 2: not valid JSON" in by_uri[f"s3://{DATA_BUCKET}/manifests/m.jsonl"]
    assert "line 1: not found: the manifest names this file but it does not exist" in by_uri["/abs/x.mp4"]


# --- the pipeline, reading from and writing to the bucket -------------------------------------


@contextlib.contextmanager
def captured_output(path: Path):
    """Everything written to fds 1/2 (this process and its children) and every log record."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield records
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            root.removeHandler(handler)
            root.setLevel(old_level)


@pytest.fixture(scope="module")
def runs(ray_local, tiny_vlm, s3, format_data, s3_formats, tmp_path_factory):
    """One local reference run (a csv manifest naming every clip on local disk, plus a
    missing object and a line that does not parse) and one run per format from S3,
    all writing to the bucket except the reference."""
    from typer.testing import CliRunner

    from emodist.cli import app

    work = tmp_path_factory.mktemp("s3runs")
    ref_manifest = work / "reference.csv"
    ref_manifest.write_text(
        format_data.reference.read_text()
        + f"missing,s3://{DATA_BUCKET}/formats/media/videos/not_uploaded.mp4\n"
        + "broken,line,with,too,many,fields\n"
    )
    overrides = [f"storage.endpoint_url={s3.endpoint}", "storage.region=us-east-1", "storage.retries=1",
                 "mode=sparse", "decode.num_cpus=0.5", "describer.num_cpus=0.5", "labeler.num_cpus=0.5"]
    sets = ["--config", str(CONFIGS / "tiny-vlm.yaml"), *(a for o in overrides for a in ("--set", o))]
    inputs = {
        "reference": (str(ref_manifest), str(work / "reference-out")),
        # videos and frame folders side by side: one listing finds both kinds
        "media": (f"{s3_formats}/media/", f"s3://{OUT_BUCKET}/runs/media"),
        "webdataset": (f"{s3_formats}/shards", f"s3://{OUT_BUCKET}/runs/webdataset"),
        "split": (f"{s3_formats}/split/dfew_set_1_test.txt", f"s3://{OUT_BUCKET}/runs/split"),
    }
    results, seconds, started = {}, {}, time.time()
    with captured_output(work / "fds.log") as records:
        for name, (src, dst) in inputs.items():
            t0 = time.perf_counter()
            res = CliRunner().invoke(app, ["run", "-i", src, "-o", dst, "--quiet", *sets])
            seconds[name] = time.perf_counter() - t0
            results[name] = (res, dst)
    return {"results": results, "records": records, "fds": (work / "fds.log").read_text(errors="replace"),
            "seconds": seconds, "started": started}


def read_rows(s3, out: str, sub: str) -> dict[str, dict]:
    if out.startswith("s3://"):
        fs, path = s3.admin, f"{out.removeprefix('s3://')}/{sub}"
        if not fs.exists(path):
            return {}
        table = pads.dataset(path, filesystem=fs, format="parquet").to_table()
    else:
        if not (Path(out) / sub).exists():
            return {}
        table = pads.dataset(Path(out) / sub, format="parquet").to_table()
    return {r[col.CLIP_ID]: r for r in table.to_pylist()}


@pytest.mark.parametrize("fmt", ["media", "webdataset", "split"])
def test_same_predictions_from_s3_as_from_local_disk(runs, s3, format_data, fmt):
    """Videos, frame folders (media), tar shards and a split file read from the bucket
    are labeled exactly as the same clips read from local disk."""
    res, out = runs["results"][fmt]
    assert res.exit_code == 0, res.output
    ref = read_rows(s3, runs["results"]["reference"][1], "predictions")
    preds = read_rows(s3, out, "predictions")
    assert set(preds) == set(format_data.expected[fmt])
    for cid, row in preds.items():
        assert row[col.URI].startswith(f"s3://{DATA_BUCKET}/formats/")
        assert row[col.REF_LABEL] == format_data.expected[fmt][cid]
        np.testing.assert_allclose(row[col.PROBS], ref[cid][col.PROBS], atol=1e-5)
        np.testing.assert_allclose(row[col.KEYFRAME_TS], ref[cid][col.KEYFRAME_TS])
        assert row[col.LABEL] == ref[cid][col.LABEL]


def test_bad_inputs_are_failure_rows_naming_the_source_and_the_problem(runs, s3):
    fails = {k: read_rows(s3, out, "failures") for k, (_, out) in runs["results"].items()}
    ref = fails["reference"]
    assert "not found: no such file or object" in ref["missing"][col.ERROR_MESSAGE]
    assert f"s3://{DATA_BUCKET}/formats/media/videos/not_uploaded.mp4" in ref["missing"][col.ERROR_MESSAGE]
    line = next(r for cid, r in ref.items() if cid.startswith("reference.csv:"))
    assert "line 13: expected 2 fields (clip_id,uri), found 6" in line[col.ERROR_MESSAGE]
    assert line[col.ERROR_STAGE] == "list"
    media = fails["media"]
    assert set(media) == {"frames/clip_broken"}
    assert "unreadable image 26.png" in media["frames/clip_broken"][col.ERROR_MESSAGE]
    assert f"s3://{DATA_BUCKET}/formats/media/frames/clip_broken" in media["frames/clip_broken"][col.ERROR_MESSAGE]
    shards = fails["webdataset"]
    assert set(shards) == {"shard-000001/../escape.mp4", "shard-000001//abs/escape.mp4"}
    for r in shards.values():
        assert "escapes the shard" in r[col.ERROR_MESSAGE] and "shard-000001.tar" in r[col.ERROR_MESSAGE]
    out_objects = s3.admin.find(OUT_BUCKET) + s3.admin.find(DATA_BUCKET)
    assert not any("escape" in o for o in out_objects)  # never written anywhere
    split = fails["split"]
    assert "line 3: expected 'path num_frames label' or 'path label', found 4 fields" in split["dfew_set_1_test.txt:3"][col.ERROR_MESSAGE]
    assert "not found" in split["clips/clip_missing"][col.ERROR_MESSAGE]
    assert set(split) == {"dfew_set_1_test.txt:3", "clips/clip_missing"}


def test_outputs_on_s3_hold_only_whole_parts_and_the_summary(runs, s3):
    for _, out in runs["results"].values():
        if not out.startswith("s3://"):
            continue
        objs = [o.removeprefix(out.removeprefix("s3://") + "/") for o in s3.admin.find(out.removeprefix("s3://"))]
        assert "summary.json" in objs
        # besides the parts: the summary and the run's bookkeeping (_emodist/: lease, configs)
        assert all(o == "summary.json" or o.startswith("_emodist/") or (o.split("/")[0] in ("predictions", "failures")
                                           and o.split("/")[1].startswith("part-")) for o in objs), objs
        assert not any(o.startswith("_emodist/lease") for o in objs)  # released at the end


def test_no_secret_in_logs_outputs_or_config(runs, s3, ray_local):
    secret = S3_SECRET.encode()
    haystacks = {"stdout/stderr": runs["fds"].encode(), "log records": "\n".join(runs["records"]).encode()}
    for name, (res, _) in runs["results"].items():
        haystacks[f"{name} cli output"] = (res.output + repr(res.exception or "")).encode()
    for o in s3.admin.find(OUT_BUCKET):
        haystacks[o] = s3.admin.cat(o)
    for p in Path(runs["results"]["reference"][1]).rglob("*"):
        if p.is_file():
            haystacks[str(p)] = p.read_bytes()
    # the Ray workers' own logs, written since the runs began: the stages log each failure there
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    for p in logs.rglob("*"):
        if p.is_file() and p.stat().st_mtime >= runs["started"] and p.stat().st_size < 50 << 20:
            haystacks[f"ray log {p.name}"] = p.read_bytes()
    leaked = [k for k, h in haystacks.items() if secret in h]
    assert not leaked, leaked
    # failure rows (Parquet parts are compressed: read, not searched as bytes) name the s3
    # uri and the problem, never the secret; workers log them only at INFO (a row, not a line)
    messages = [r[col.ERROR_MESSAGE] for _, out in runs["results"].values()
                for r in read_rows(s3, out, "failures").values()]
    assert any(m.startswith("decode: s3://") and "not found" in m for m in messages), messages
    assert not any(S3_SECRET in m for m in messages)


@pytest.fixture(scope="module")
def s3_other(tmp_path_factory, s3_credentials):
    """A second, separate S3 server with the same bucket names and user."""
    from tests import s3_server

    server = s3_server.start(tmp_path_factory.mktemp("s3-other"), user_key=S3_KEY, user_secret=S3_SECRET,
                             user_buckets=[DATA_BUCKET, OUT_BUCKET])
    yield S3(server, server.endpoint, server.kind)
    server.stop()


@pytest.mark.slow
def test_two_runs_in_one_process_reach_their_own_endpoints(ray_local, tiny_vlm, s3, s3_other, clips_dir):
    """Storage settings are passed explicitly, never into fsspec's process-wide config:
    runs against two servers in one process each read and write their own, and reading
    one run's output afterwards (resume, eval) still reaches its server."""
    from emodist import pipeline
    from emodist.evaluate import evaluate

    clips = sorted(clips_dir.glob("clip_*.mp4"))
    for server, names in ((s3, clips[:2]), (s3_other, clips[2:5])):
        lines = "uri,label\n" + "".join(f"{p.name},happy\n" for p in names)
        server.admin.pipe(f"{DATA_BUCKET}/two-endpoints/manifest.csv", lines.encode())
        for p in names:
            server.admin.put_file(str(p), f"{DATA_BUCKET}/two-endpoints/{p.name}")
    manifest = f"s3://{DATA_BUCKET}/two-endpoints/manifest.csv"
    out = f"s3://{OUT_BUCKET}/two-endpoints/run"
    cfg_a, cfg_b = s3.config("mode=sparse"), s3_other.config("mode=sparse")
    a = pipeline.run(cfg_a, manifest, out, progress=False)
    b = pipeline.run(cfg_b, manifest, out, progress=False)
    assert (a.labeled, b.labeled) == (2, 3)
    again = pipeline.run(cfg_a, manifest, out, progress=False)  # resume reads server A's parts
    assert (again.labeled, again.skipped_done) == (0, 2)
    for server, n in ((s3, 2), (s3_other, 3)):
        t = pads.dataset(f"{OUT_BUCKET}/two-endpoints/run/predictions", filesystem=server.admin,
                         format="parquet").to_table()
        assert t.num_rows == n and all(u.startswith(f"s3://{DATA_BUCKET}/two-endpoints/") for u in t["uri"].to_pylist())
    assert evaluate(out, manifest, bootstrap=0, cfg=cfg_a).n == 2
    assert evaluate(out, manifest, bootstrap=0, cfg=cfg_b).n == 3


# --- issue 27: one spelling per path; an output bucket that does not exist ---------------

@pytest.mark.parametrize("given, normal", [
    ("clips//a.mp4", "clips/a.mp4"), ("./clips/a.mp4", "clips/a.mp4"), ("/data/x/../clips/a.mp4", "/data/clips/a.mp4"),
    ("/data/clips/", "/data/clips"), ("//data/a.mp4", "/data/a.mp4"), ("s3://b/x//./y/../a.mp4", "s3://b/x/a.mp4"),
    ("s3://b/../a.mp4", "s3://b/a.mp4"), ("s3://b/out/", "s3://b/out"), ("https://h/v//a.mp4?sig=a//b", "https://h/v/a.mp4?sig=a//b"),
])
def test_one_file_has_one_spelling(given, normal):
    assert storage.normal_uri(given) == normal


def test_an_output_bucket_that_does_not_exist_is_refused_not_created(s3, clips_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emodist.cli import app

    from tests.s3_server import ADMIN_KEY, ADMIN_SECRET

    missing = "emodist-no-such-bucket-27"
    # with credentials that may create buckets (s3fs's makedirs created it, silently)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ADMIN_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ADMIN_SECRET)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps filesystems by options, not by credentials
    res = CliRunner().invoke(app, ["run", "-i", str(clips_dir), "-o", f"s3://{missing}/out",
                                   "--set", f"storage.endpoint_url={s3.endpoint}", "--set", "storage.region=us-east-1",
                                   "--set", "storage.retries=1"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"bucket '{missing}' does not exist; create it first" in lines[0], lines
    assert not s3.admin.exists(missing)
    s3fs.S3FileSystem.clear_instance_cache()  # the next tests' filesystems use the pipeline's credentials
