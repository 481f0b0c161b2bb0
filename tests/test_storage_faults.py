"""Transient storage faults (503s, dropped connections) are retried: nothing is lost."""
from urllib.parse import urlparse

import pyarrow.parquet as pq

from emodist import pipeline
from tests.conftest_s3 import DATA_BUCKET, OUT_BUCKET
from tests.faulty_proxy import FaultyProxy


def test_flaky_s3_is_retried_and_every_clip_gets_one_row(ray_local, tiny_vlm, s3, clips_dir):
    fs = s3.admin
    clips = sorted(clips_dir.glob("clip_*.mp4"))[:6]
    for p in clips:
        fs.put_file(str(p), f"{DATA_BUCKET}/flaky/{p.name}")
    fs.pipe_file(f"{DATA_BUCKET}/flaky/manifest.csv",
                 ("uri,label\n" + "".join(f"{p.name},happy\n" for p in clips)).encode())
    # Clients keep connections alive, so faults go to connections: every other one fails.
    with FaultyProxy(urlparse(s3.endpoint).port, every=2) as proxy:
        cfg = s3.config("mode=sparse", f"storage.endpoint_url=http://127.0.0.1:{proxy.port}",
                        "storage.retries=6")
        summary = pipeline.run(cfg, f"s3://{DATA_BUCKET}/flaky/manifest.csv", f"s3://{OUT_BUCKET}/flaky-run",
                               progress=False)
    assert proxy.faults >= 2, "the proxy must really have injected faults"
    assert (summary.labeled, summary.failed) == (6, 0)
    ids = []
    for path in fs.find(f"{OUT_BUCKET}/flaky-run/predictions"):
        with fs.open(path, "rb") as f:
            ids += pq.read_table(f, columns=["clip_id"]).column(0).to_pylist()
    assert sorted(ids) == sorted(p.stem for p in clips)
    failure_rows = 0
    for path in fs.find(f"{OUT_BUCKET}/flaky-run/failures"):  # a schema-only part: readable, no rows
        with fs.open(path, "rb") as f:
            failure_rows += pq.read_table(f).num_rows
    assert failure_rows == 0
