import pyarrow as pa
import pyarrow.dataset as pads

from emodist import schema as col
from emodist.output.writer import PartWriter


def row(i):
    return {col.CLIP_ID: f"c{i}", col.URI: f"/v/{i}.mp4", col.ERROR_STAGE: "decode",
            col.ERROR_TYPE: "ClipError", col.ERROR_MESSAGE: "x", col.ATTEMPTS: 1, col.CONFIG_HASH: "h"}


def test_parts_are_committed_every_part_rows_and_leave_no_temp_files(tmp_path):
    w = PartWriter(str(tmp_path / "failures"), col.FAILURES, part_rows=4)
    w.add(pa.Table.from_pylist([row(i) for i in range(10)], schema=col.FAILURES))
    files = sorted(p.name for p in (tmp_path / "failures").iterdir())
    assert len(files) == 2 and all(f.startswith("part-") and f.endswith(".parquet") for f in files)
    w.flush()
    assert w.written == 10 and w.parts == 3
    assert not [p for p in (tmp_path / "failures").iterdir() if p.name.startswith(".")]
    t = pads.dataset(tmp_path / "failures").to_table()
    assert sorted(t.column(col.CLIP_ID).to_pylist()) == sorted(f"c{i}" for i in range(10))
    assert t.schema.equals(col.FAILURES)
