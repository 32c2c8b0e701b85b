"""pyarrow.fs against fsspec's s3fs on a loopback S3 (moto): what zbatch's object storage uses.

    python bench/object_clients.py                 # 1M rows (needs pip install -e ".[test,s3]")
    python bench/object_clients.py --rows 200000

One moto server in this process; each case runs in a fresh interpreter and reports its wall
seconds and peak RSS (VmHWM). Cases: stream a Parquet file a row group at a time (local disk,
pyarrow's S3FileSystem from ``FileSystem.from_uri``, an s3fs file object, pyarrow over s3fs
through ``FSSpecHandler``); stream a .jsonl.gz file line by line (local, pyarrow with a 1 MB
buffer, s3fs); write a 200k-row Parquet file (pyarrow, s3fs create-only ``"xb"``). Then whether
each client can write create-only at all: a second ``"xb"`` write of one key must be refused
(S3 answers 412 to ``If-None-Match: *``), also for a multipart upload.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import arg_parser, machine_line, say, table, work_dir

CASES = [
    "parquet, local file",
    "parquet, pyarrow.fs S3",
    "parquet, s3fs file",
    "parquet, pyarrow over s3fs",
    "jsonl.gz, local file",
    "jsonl.gz, pyarrow.fs S3",
    "jsonl.gz, s3fs file",
    "write parquet, pyarrow.fs S3",
    "write parquet, s3fs xb",
]
BUCKET = "bench"


def hwm_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def run_case(case: str, work: Path) -> str:
    """One case in this (fresh) interpreter: rows read or written, seconds, peak RSS."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    started, rows = time.perf_counter(), 0
    kind, _, client = case.partition(", ")
    if kind == "parquet":
        if client == "local file":
            source: Any = str(work / "in.parquet")
        elif client == "pyarrow.fs S3":
            fs, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/in.parquet")
            source = fs.open_input_file(path)
        elif client == "s3fs file":
            import s3fs

            source = s3fs.S3FileSystem().open(f"{BUCKET}/in.parquet", "rb")
        else:
            import s3fs

            wrapped = pafs.PyFileSystem(pafs.FSSpecHandler(s3fs.S3FileSystem()))
            source = wrapped.open_input_file(f"{BUCKET}/in.parquet")
        reader = pq.ParquetFile(source, pre_buffer=False)
        for batch in reader.iter_batches(batch_size=4096, use_threads=False):
            rows += len(batch.to_pylist())
    elif kind == "jsonl.gz":
        if client == "local file":
            raw: Any = open(work / "in.jsonl.gz", "rb")  # noqa: SIM115 (closed below)
        elif client == "pyarrow.fs S3":
            fs, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/in.jsonl.gz")
            raw = fs.open_input_stream(path, compression=None, buffer_size=1 << 20)
        else:
            import s3fs

            raw = s3fs.S3FileSystem().open(f"{BUCKET}/in.jsonl.gz", "rb")
        with raw, gzip.open(raw, "rb") as handle:
            for line in handle:
                rows += bool(json.loads(line))
    else:
        table_ = pq.read_table(work / "in.parquet").slice(0, 200_000)
        if client == "pyarrow.fs S3":
            fs, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/out-pyarrow.parquet")
            with fs.open_output_stream(path) as out:
                pq.write_table(table_, out)
        else:
            import s3fs

            with s3fs.S3FileSystem().open(f"{BUCKET}/out-s3fs.parquet", "xb") as out:
                pq.write_table(table_, out)
        rows = table_.num_rows
    return json.dumps([rows, time.perf_counter() - started, hwm_mb()])


def create_only_checks() -> list[list[Any]]:
    """Can each client refuse to overwrite? (a second create-only write of the same key)"""
    import s3fs

    fs = s3fs.S3FileSystem(use_listings_cache=False)
    found = []
    for label, size in (("single PUT", 10), ("multipart upload", 12 * 1024 * 1024)):
        key = f"{BUCKET}/xb-{size}"
        with fs.open(key, "xb", block_size=5 * 1024 * 1024) as out:
            out.write(b"a" * size)
        try:
            with fs.open(key, "xb", block_size=5 * 1024 * 1024) as out:
                out.write(b"b" * size)
            verdict = "overwritten"
        except FileExistsError:
            verdict = "refused (412), first object intact" if fs.cat_file(key)[:1] == b"a" else "?"
        found.append([f"s3fs open(key, 'xb'), {label}", verdict])
    found.append(["pyarrow.fs open_output_stream", "no create-only mode (always overwrites)"])
    return found


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child running one case
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(run_case(args.case, Path(args.work)))
        return

    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="AKIABENCHMARK0000000",
        AWS_SECRET_ACCESS_KEY="bench-secret-not-a-real-one",
        AWS_DEFAULT_REGION="us-east-1",
    )
    print(f"machine: {machine_line()}\n")
    with work_dir("zbatch-objclients-") as work:
        say(f"making {args.rows:,} rows ...")
        ids = [f"r{i}" for i in range(args.rows)]
        texts = [f"review number {i} " * 5 for i in range(args.rows)]
        pq.write_table(
            pa.table({"id": ids, "text": texts}), work / "in.parquet", row_group_size=50_000
        )
        with gzip.open(work / "in.jsonl.gz", "wt") as out:
            for row_id, text in zip(ids, texts, strict=True):
                out.write(json.dumps({"id": row_id, "text": text}) + "\n")
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        fs.put(str(work / "in.parquet"), f"{BUCKET}/in.parquet")
        fs.put(str(work / "in.jsonl.gz"), f"{BUCKET}/in.jsonl.gz")
        baseline = subprocess.run(
            [sys.executable, "-c", "import pyarrow.parquet, pyarrow.fs, json, gzip\n" + _HWM],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows_out = [["interpreter + pyarrow imports", "-", "-", baseline.stdout.strip()]]
        for case in CASES:
            say(f"  {case} ...")
            cmd = [sys.executable, __file__, "--case", case, "--work", str(work)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows, seconds, peak = json.loads(done.stdout.strip().splitlines()[-1])
            rows_out.append([case, rows, round(seconds, 2), peak])
        print(table(["case", "rows", "seconds", "peak RSS MB"], rows_out))
        print()
        print(table(["create-only write", "second write of the same key"], create_only_checks()))
    server.stop()


_HWM = (
    "print([int(l.split()[1]) // 1024 for l in open('/proc/self/status') "
    "if l.startswith('VmHWM:')][0])"
)

if __name__ == "__main__":
    main()
