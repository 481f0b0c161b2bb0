"""Manifests and split files, read as `run` reads them: relative uris, ids, labels, bad
lines as failure rows with their line numbers, and the same reader in process."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emodist import schema as col
from emodist.config import load_config
from emodist.io.source import list_clips, open_source
from emodist.io.source import read_manifest
from emodist.storage import SourceError


def rows(uri, *overrides):
    return list(open_source(str(uri), load_config(None, list(overrides))).rows())


def failures(rs):
    return [r for r in rs if r[col.ERROR_STAGE]]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifests_resolve_relative_uris_and_keep_labels(tmp_path, fmt):
    rows = [{"uri": "v/x.mp4", "label": "happy"}, {"uri": "/abs/y.mp4", "label": "sad"}]
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        path.write_text("uri,label\n" + "".join(f"{r['uri']},{r['label']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    t = list_clips(str(path)).to_pylist()
    assert [(r["clip_id"], r["uri"], r["ref_label"]) for r in t] == [
        # ids: the path under the manifest's folder; outside it, the whole path
        ("v/x", str(tmp_path / "v" / "x.mp4"), "happy"), ("abs/y", "/abs/y.mp4", "sad")]


def test_manifest_clip_id_column_wins(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("clip_id,uri\nid-1,a.mp4\n")
    assert read_manifest(str(path))[0].to_pylist()[0]["clip_id"] == "id-1"


def test_csv_ids_and_label_codes_stay_strings(tmp_path):
    (tmp_path / "m.csv").write_text("clip_id,uri,label\n00001,a.mp4,3\n")
    row = read_manifest(str(tmp_path / "m.csv"))[0].to_pylist()[0]
    assert row["clip_id"] == "00001" and row["ref_label"] == "3"


def test_split_file_by_suffix_and_by_content(tmp_path):
    (tmp_path / "s.txt").write_text("v/a.mp4 10 1\nv/b 20 7\n\nbroken line with five fields\nv/c.mp4 9\n")
    rs = rows(tmp_path / "s.txt")
    good = [(r[col.CLIP_ID], r[col.URI], r[col.REF_LABEL]) for r in rs if not r[col.ERROR_STAGE]]
    assert good == [("v/a", str(tmp_path / "v/a.mp4"), "happy"), ("v/b", str(tmp_path / "v/b"), "fear")]
    bad = failures(rs)
    assert [r[col.CLIP_ID] for r in bad] == ["s.txt:4", "s.txt:5"]
    assert "line 4: expected 'path num_frames label' or 'path label', found 5 fields" in bad[0][col.ERROR_MESSAGE]
    assert "line 5: label code 9 is not a DFEW code" in bad[1][col.ERROR_MESSAGE]
    assert all(r[col.ERROR_STAGE] == "list" and str(tmp_path / "s.txt") in r[col.ERROR_MESSAGE] for r in bad)
    # MAE-DFER writes the same lines into a headerless .csv
    (tmp_path / "train.csv").write_text("/data/ferv/Action/Sad/0010 3\n")
    assert [(r[col.CLIP_ID], r[col.REF_LABEL]) for r in rows(tmp_path / "train.csv", "labels=ferv39k")] == [
        ("data/ferv/Action/Sad/0010", "happy")]  # absolute, outside the split file's folder: the whole path


def test_input_root_resolves_relative_paths(tmp_path):
    (tmp_path / "s.txt").write_text("00025.mp4 anger\n")
    r = rows(tmp_path / "s.txt", "labels=mafw", "input.root=s3://bucket/mafw/clips")[0]
    assert (r[col.URI], r[col.CLIP_ID], r[col.REF_LABEL]) == ("s3://bucket/mafw/clips/00025.mp4", "00025", "angry")


def test_csv_manifest_bad_lines_are_failure_rows_with_line_numbers(tmp_path):
    (tmp_path / "m.csv").write_text(
        'uri,label\na.mp4,happy\n"b,\nc.mp4",sad\nd.mp4,sad,extra\ne.mp4\n,fear\nf.mp4,fear\n')
    rs = rows(tmp_path / "m.csv")
    assert [r[col.URI].rsplit("/", 1)[-1] for r in rs if not r[col.ERROR_STAGE]] == ["a.mp4", "b,\nc.mp4", "f.mp4"]
    msgs = {r[col.CLIP_ID]: r[col.ERROR_MESSAGE] for r in failures(rs)}
    assert set(msgs) == {"m.csv:5", "m.csv:6", "m.csv:7"}  # physical line numbers
    assert "line 5: expected 2 fields (uri,label), found 3" in msgs["m.csv:5"]
    assert "line 6: expected 2 fields (uri,label), found 1" in msgs["m.csv:6"]
    assert "line 7: empty uri" in msgs["m.csv:7"]
    with pytest.raises(SourceError, match="line 5: expected 2 fields"):
        list_clips(str(tmp_path / "m.csv"))  # the in-process listing refuses instead


def test_jsonl_manifest_bad_lines(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"uri": "a.mp4", "label": "sad"}\n{"uri": \n["x"]\n{"label": "x"}\n')
    rs = rows(tmp_path / "m.jsonl")
    assert [r[col.CLIP_ID] for r in rs if not r[col.ERROR_STAGE]] == ["a"]
    msgs = [r[col.ERROR_MESSAGE] for r in failures(rs)]
    assert "line 2: not valid JSON" in msgs[0] and "line 3: expected a JSON object" in msgs[1]
    assert "line 4: no 'uri' key" in msgs[2]


@pytest.mark.parametrize("values, shown", [([1, 2], "int64"), ([b"a.mp4", b"b.mp4"], "binary")])
def test_a_parquet_uri_column_that_holds_no_strings_is_refused_at_start(tmp_path, values, shown):
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": values, "label": ["happy", "sad"]}), m)
    msg = f"column 'uri' is {shown}; it must hold strings (paths or URLs): write it as a string column"
    with pytest.raises(SourceError) as e:
        open_source(str(m))  # one error at start, not "not found" for every row
    assert str(e.value) == f"{m}: {msg}"
    # A folder of manifests is read row by row: one failure row for the file, no clip rows.
    rs = rows(tmp_path, "input.format=manifest")
    assert [(r[col.CLIP_ID], r[col.ERROR_MESSAGE]) for r in rs] == [("m.parquet", f"list: {m}: {msg}")]


# --- credentials and spellings (issue 27) ------------------------------------------------

KEY, SECRET = "KEYID27MANI", "Sekrit27mani"


def _with_credentials(uri: str) -> str:
    return uri.replace("://", f"://{KEY}:{SECRET}@", 1)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "split"])
def test_a_uri_with_credentials_is_a_failure_row_that_holds_none_in_every_format(tmp_path, fmt):
    uris = ["s3://bucket/clips/a.mp4", "https://example.com/v/b.mp4", "s3://bucket/shard-0.tar#c.mp4"]
    dirty = [_with_credentials(u) for u in uris]
    path = tmp_path / f"m.{'txt' if fmt == 'split' else fmt}"
    if fmt == "csv":
        path.write_text("uri,label\n" + "".join(f"{u},happy\n" for u in dirty))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"uri": u, "label": "happy"}) + "\n" for u in dirty))
    elif fmt == "parquet":
        pq.write_table(pa.table({"uri": dirty, "label": ["happy"] * 3}), path)
    else:
        path.write_text("".join(f"{u} 1\n" for u in dirty))
    rs = rows(path)
    assert len(rs) == 3 and all(r[col.ERROR_STAGE] == "list" for r in rs)
    assert [r[col.URI] for r in rs] == uris
    assert all("the uri carries credentials" in r[col.ERROR_MESSAGE] for r in rs)
    for r in rs:
        text = f"{r[col.CLIP_ID]} {r[col.URI]} {r[col.ERROR_MESSAGE]}"
        assert KEY not in text and SECRET not in text and "***" not in r[col.CLIP_ID]


def test_a_folder_or_glob_input_with_credentials_is_refused_at_start_without_them():
    for uri in (f"s3://{KEY}:{SECRET}@bucket/clips/", f"s3://{KEY}:{SECRET}@bucket/clips/*.mp4",
                f"s3://{KEY}:{SECRET}@bucket/shards/*.tar"):
        with pytest.raises(SourceError) as err:
            open_source(uri)
        assert "the uri carries credentials" in str(err.value) and SECRET not in str(err.value)


def test_one_file_spelled_several_ways_gives_one_id_and_one_uri(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    spellings = ["clips/a.mp4", "./clips/a.mp4", "clips//a.mp4", "clips/../clips/a.mp4", f"{tmp_path}//clips/./a.mp4"]
    path = tmp_path / "m.csv"
    path.write_text("uri\n" + "".join(f"{s}\n" for s in spellings)
                    + "s3://b/x//y/./c.mp4\ns3://b/x/y/c.mp4\n")
    rs = rows(path)
    assert {(r[col.CLIP_ID], r[col.URI]) for r in rs[:5]} == {("clips/a", str(tmp_path / "clips" / "a.mp4"))}
    assert rs[5][col.URI] == rs[6][col.URI] == "s3://b/x/y/c.mp4"


def _big_manifest(tmp_path, fmt: str, n: int = 240):
    """n lines; the CSV's every third uri holds quoted newlines, commas and escaped quotes,
    and bad lines sit among the good ones (their line numbers must survive the ranges)."""
    path = tmp_path / f"big.{'txt' if fmt == 'split' else fmt}"
    out = ["uri,clip_id,label\n"] if fmt == "csv" else []
    for i in range(n):
        if fmt == "csv":
            u = f'"dir {i},\n""quoted""\nclip_{i}.mp4"' if i % 3 == 0 else f"v/clip_{i}.mp4"
            out.append(f"{u},id{i},happy\n" if i % 17 else f"v/clip_{i}.mp4,id{i},happy,extra\n")
        elif fmt == "jsonl":
            out.append(json.dumps({"uri": f"v/clip_{i}.mp4", "clip_id": f"id{i}", "label": "sad"}) + "\n"
                       if i % 17 else '{"uri": \n')
        else:
            out.append(f"v/clip_{i}.mp4 75 {1 + i % 7}\n" if i % 17 else f"v/clip_{i}.mp4\n")
    path.write_text("".join(out))
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "split"])
def test_a_large_manifest_is_read_in_ranges_that_give_every_line_once_with_its_number(tmp_path, fmt, monkeypatch):
    from emodist import storage
    from emodist.io import manifests

    path = _big_manifest(tmp_path, fmt)
    cfg = load_config(None, ["labels=dfew"])
    fs, p = storage.filesystem(str(path), cfg)
    kind = manifests.manifest_kind(fs, p)
    whole = list(manifests.manifest_rows(str(path), cfg, kind))
    assert len(whole) == 240 and len(failures(whole)) == 15
    spans = manifests.spans(fs, p, kind, span_bytes=300)
    assert len(spans) > 10 and spans[0][:1] == (0,) and spans[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no byte twice
    ranged = [r for span in spans for r in manifests.manifest_rows(str(path), cfg, kind, span)]
    assert ranged == whole  # same rows, ids, uris, labels, line numbers and failure messages
    if fmt == "csv":  # ranges cut at any newline (quotes ignored) would split the quoted uris
        naive = manifests.spans(fs, p, "jsonl", span_bytes=300)
        assert [r for span in naive for r in manifests.manifest_rows(str(path), cfg, kind, span)] != whole
    # ClipSource: one read task per range, the same rows in the driver's count and listing
    monkeypatch.setattr(manifests, "SPAN_BYTES", 300)
    source = open_source(str(path), cfg)
    assert len(source.row_generators()) == len(spans)
    assert list(source.rows()) == whole and source.count() == 240


def test_a_small_manifest_is_one_range(tmp_path):
    from emodist import storage
    from emodist.io import manifests

    path = _big_manifest(tmp_path, "csv", n=5)
    fs, p = storage.filesystem(str(path), load_config(None, []))
    assert manifests.spans(fs, p, "csv") == [(0, None, 1)]


@pytest.mark.slow
def test_a_run_and_its_resume_read_a_large_manifest_in_several_read_tasks(ray_local, tmp_path, monkeypatch):
    """Real Ray: a manifest of missing files read by several read tasks gives one failure
    row per clip with its line number, a line repeated in another range counts once (a
    duplicate, found by the driver's commit), and the rerun skips every clip."""
    import pyarrow.dataset as pads

    from emodist import pipeline
    from emodist.io import manifests

    n = 300
    lines = ["uri,label\n"] + [f"/nonexistent-emodist/set{i % 7}/clip_{i:05d}.mp4,happy\n" for i in range(n)]
    lines.insert(100, '"/nonexistent-emodist/two\nlines.mp4",sad\n')  # a quoted newline in a later range
    lines.append(lines[2])  # line 3's clip again, in the last range
    manifest = tmp_path / "m.csv"
    manifest.write_text("".join(lines))
    monkeypatch.setattr(manifests, "SPAN_BYTES", 2048)
    cfg = load_config(None, ["run.num_cpus=2", "decode.num_cpus=0.5"])
    assert len(open_source(str(manifest), cfg).row_generators()) >= 5
    out = tmp_path / "out"
    s = pipeline.run(cfg, str(manifest), str(out), progress=False)
    assert (s.failed, s.labeled, s.duplicates) == (n + 1, 0, 1)
    fails = pads.dataset(out / "failures").to_table().to_pylist()
    by_uri = {r[col.URI]: r[col.ERROR_MESSAGE] for r in fails}
    assert len(by_uri) == n + 1
    assert ": line 101: not found" in by_uri["/nonexistent-emodist/two\nlines.mp4"]
    assert ": line 299: not found" in by_uri["/nonexistent-emodist/set1/clip_00295.mp4"]  # 2 physical lines inserted
    assert ": line 3: not found" in by_uri["/nonexistent-emodist/set1/clip_00001.mp4"]  # its first line, not the repeat
    again = pipeline.run(cfg, str(manifest), str(out), progress=False)
    # every clip skipped; the repeat, read by another task than its first line, is skipped
    # again there (one task would count it a duplicate): a count, no row
    assert (again.skipped_done, again.failed, again.labeled) == (n + 2, 0, 0)
    assert len(pads.dataset(out / "failures").to_table()) == n + 1
