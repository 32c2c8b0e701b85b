"""Batch mode with the output directory on object storage (moto's S3 on loopback): the ledger
goes through the same Storage as the parts, so a resume after kill -9 re-attaches there too."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
from batch_server import BatchServer
from conftest import prompt_rows, zbatch_env
from helpers import kill_then_resume
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)
from zai_server import answer_for


def test_a_batch_run_on_s3_resumes_after_kill_9_and_submits_each_row_once(s3: S3) -> None:
    rows = prompt_rows(12)
    source = s3.url("in/rows.jsonl")
    s3.fs().pipe(f"{s3.bucket}/in/rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    outdir = s3.url("runs/batch")
    with BatchServer() as srv:
        args = ["run", "-i", source, "-o", outdir, "--base-url", srv.base_url, "--mode", "batch"]
        args += ["--poll-seconds", "0.01"]
        kill_then_resume(args, zbatch_env(**s3.env), "after:create")
        assert srv.submitted == {row["id"]: 1 for row in rows}
        assert len(srv.uploads) == 1
    records = s3.fs().ls(f"{s3.bucket}/runs/batch/batches", detail=False)
    assert sorted(name.rsplit("/", 1)[1] for name in records) == ["00001.ids", "00001.json"]
    results = []
    for key in s3.fs().ls(f"{s3.bucket}/runs/batch/results", detail=False):
        results += pq.read_table(io.BytesIO(s3.fs().cat_file(key))).to_pylist()
    prompts = {row["id"]: row["prompt"] for row in rows}
    assert sorted(r["id"] for r in results) == sorted(prompts)
    for result in results:
        assert result["content"] == answer_for([{"role": "user", "content": prompts[result["id"]]}])
