"""The Batch API client (zbatch.batch.api) against the loopback Batch API server, and the
server itself: statuses, answers per line, faults, and what each failure becomes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from batch_server import BatchServer
from zai_server import answer_for

from zbatch.batch.api import BatchApi, BatchInfo
from zbatch.batch.simulate import SimulatedBatchApi
from zbatch.errors import EndpointDown, FatalApiError, JobError, QuotaReached
from zbatch.job import Job
from zbatch.limits import Backoff
from zbatch.providers import ZAI

ENDPOINT = "/v4/chat/completions"
KEY = "zk-batch-test-key-0123456789"
T = TypeVar("T")


def run(factory: Callable[[BatchApi], Awaitable[T]], base_url: str, **options: Any) -> T:
    """Run one coroutine against a fresh client (no backoff waits)."""

    async def main() -> T:
        api = BatchApi(
            ZAI,
            base_url=base_url,
            api_key=options.pop("api_key", KEY),
            timeout=10,
            max_retries=options.pop("max_retries", 3),
            backoff=Backoff(base=0.0001, cap=0.001),
            **options,
        )
        try:
            with anyio.fail_after(30):
                return await factory(api)
        finally:
            await api.aclose()

    return anyio.run(main)


async def submit(api: BatchApi, source: Path) -> BatchInfo:
    """Upload ``source`` and create a batch of it."""
    uploaded = await api.upload(source, "f.jsonl")
    return await api.create(uploaded.id, endpoint=ENDPOINT, metadata={})


def line(custom_id: str, prompt: str, model: str = "glm-4.6") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text().splitlines()]


@pytest.fixture
def server() -> Iterator[BatchServer]:
    with BatchServer(require_key=KEY) as srv:
        yield srv


def test_a_batch_goes_from_upload_to_answers_that_match_each_prompt(
    server: BatchServer, tmp_path: Path
) -> None:
    """Upload, create, poll to completed, download: every line holds its own prompt's answer,
    and the error file holds the line whose prompt asks for a 400."""
    prompts = {f"row-{n:04d}": f"question number {n}" for n in range(30)}
    prompts["row-fail"] = "FAIL=1214 please"
    source = write_lines(tmp_path / "in.jsonl", [line(c, p) for c, p in prompts.items()])

    async def scenario(api: BatchApi) -> list[str]:
        uploaded = await api.upload(source, "zbatch-test.jsonl")
        assert uploaded.bytes == source.stat().st_size
        batch = await api.create(uploaded.id, endpoint=ENDPOINT, metadata={"job": "t"})
        seen = [batch.status]
        for _ in range(10):
            batch = await api.get(batch.id)
            seen.append(batch.status)
            if batch.status == "completed":
                break
        assert (batch.total, batch.completed, batch.failed) == (31, 30, 1)
        assert batch.output_file_id is not None and batch.error_file_id is not None
        await api.download(batch.output_file_id, tmp_path / "out.jsonl")
        await api.download(batch.error_file_id, tmp_path / "err.jsonl")
        return seen

    seen = run(scenario, server.base_url)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    out = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(item["custom_id"] for item in out) == sorted(set(prompts) - {"row-fail"})
    assert [item["custom_id"] for item in out] != sorted(item["custom_id"] for item in out)
    for item in out:
        assert item["response"]["status_code"] == 200
        content = item["response"]["body"]["choices"][0]["message"]["content"]
        messages = [{"role": "user", "content": prompts[item["custom_id"]]}]
        assert content == answer_for(messages)
    (error,) = read_jsonl(tmp_path / "err.jsonl")
    assert error["custom_id"] == "row-fail"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "1214"
    assert server.submitted == dict.fromkeys(prompts, 1)
    assert server.requests["upload"] == 1


def test_the_server_moves_batches_only_when_told(tmp_path: Path) -> None:
    """advance="manual": polling never moves a batch; step() does, one status at a time."""
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])
    with BatchServer(advance="manual") as srv:
        batch_id = run(lambda api: submit(api, source), srv.base_url).id
        statuses = [run(lambda api: api.get(batch_id), srv.base_url).status for _ in range(3)]
        assert statuses == ["validating"] * 3
        srv.step(batch_id)
        assert run(lambda api: api.get(batch_id), srv.base_url).status == "in_progress"


def test_an_expired_batch_delivers_only_the_lines_it_finished(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line(f"line-{n:03d}", str(n)) for n in range(10)])
    with BatchServer(advance="manual") as srv:
        srv.expire_next(after_lines=4)

        async def scenario(api: BatchApi) -> None:
            batch = await submit(api, source)
            srv.settle()
            batch = await api.get(batch.id)
            assert batch.status == "expired"
            assert (batch.total, batch.completed, batch.failed) == (10, 4, 0)
            assert batch.output_file_id is not None
            await api.download(batch.output_file_id, tmp_path / "out.jsonl")

        run(scenario, srv.base_url)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 4


def test_a_failed_validation_is_a_failed_batch_with_the_reason(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])
    with BatchServer(advance="manual") as srv:
        srv.fail_next_validation("line 1: the body is not valid")

        async def scenario(api: BatchApi) -> None:
            batch = await submit(api, source)
            srv.step()
            batch = await api.get(batch.id)
            assert batch.status == "failed"
            assert batch.output_file_id is None
            assert batch.errors == "1214: line 1: the body is not valid"

        run(scenario, srv.base_url)


def test_cancel_then_the_batch_delivers_what_it_finished(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line(f"line-{n:03d}", str(n)) for n in range(6)])
    with BatchServer(advance="manual", lines_per_step=2) as srv:

        async def scenario(api: BatchApi) -> None:
            batch = await submit(api, source)
            srv.step(times=2)  # in_progress, 2 lines answered
            assert (await api.cancel(batch.id)).status == "cancelling"
            srv.step()
            batch = await api.get(batch.id)
            assert (batch.status, batch.completed) == ("cancelled", 2)

        run(scenario, srv.base_url)


def test_a_crashed_upload_and_create_are_found_again(server: BatchServer, tmp_path: Path) -> None:
    """find_file by upload name and find_batch by input file (paging the list)."""
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])

    async def scenario(api: BatchApi) -> None:
        uploaded = await api.upload(source, "zbatch-abc.jsonl")
        assert await api.find_file("zbatch-abc.jsonl") == uploaded
        assert await api.find_file("zbatch-other.jsonl") is None
        batch = await api.create(uploaded.id, endpoint=ENDPOINT, metadata={})
        for _ in range(5):  # newer batches push the one we look for to a later page
            other = await api.upload(source, "other.jsonl")
            await api.create(other.id, endpoint=ENDPOINT, metadata={})
        found = await api.find_batch(uploaded.id, page=2)
        assert found is not None and found.id == batch.id
        assert await api.find_batch("file-none", page=2) is None

    run(scenario, server.base_url)
    assert server.requests["list"] >= 3


@pytest.mark.parametrize(
    ("route", "status", "code", "expected"),
    [
        ("upload", 401, "1002", "check the API key"),
        ("create", 429, "1113", "top up"),
        ("upload", 400, "1210", "may not be open to the Batch API"),
        ("upload", 413, "", "lower [run] batch_max_bytes"),
    ],
)
def test_fatal_answers_to_upload_or_create_stop_with_what_to_do(
    server: BatchServer, tmp_path: Path, route: str, status: int, code: str, expected: str
) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])
    server.inject(route, status, code)

    with pytest.raises(FatalApiError, match=expected.replace("[", r"\[")) as caught:
        run(lambda api: submit(api, source), server.base_url)
    assert caught.value.exit_code == 3
    assert KEY not in str(caught.value)
    assert server.submitted == {}


def test_quota_on_create_is_exit_4(server: BatchServer, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])
    server.inject("create", code="1308")

    with pytest.raises(QuotaReached):
        run(lambda api: submit(api, source), server.base_url)


def test_model_and_short_custom_ids_are_checked_at_upload(tmp_path: Path) -> None:
    """The server refuses what Zhipu refuses: a model not open to batches (1210) and a
    custom_id shorter than 6 characters (1214)."""
    with BatchServer(models=frozenset({"glm-4.6"})) as srv:
        wrong_model = write_lines(tmp_path / "a.jsonl", [line("abcdef", "hi", model="glm-5")])
        with pytest.raises(FatalApiError, match="1210"):
            run(lambda api: api.upload(wrong_model, "a.jsonl"), srv.base_url)
        short = write_lines(tmp_path / "b.jsonl", [line("abc", "hi")])
        with pytest.raises(FatalApiError, match="1214"):
            run(lambda api: api.upload(short, "b.jsonl"), srv.base_url)
        assert srv.uploads == []


@pytest.mark.parametrize("how", ["404", "1222"])
def test_a_base_url_without_a_batch_api_is_a_job_error(tmp_path: Path, how: str) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])
    with (
        BatchServer(no_batch_api=how) as srv,
        pytest.raises(JobError, match=r"has no Batch API.*use --mode online") as caught,
    ):
        run(lambda api: api.upload(source, "f.jsonl"), srv.base_url)
    assert caught.value.exit_code == 2


def test_retryable_failures_back_off_then_succeed(server: BatchServer, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [line("abcdef", "hi")])
    server.inject("upload", 500, times=2)
    server.inject("create", code="1302", times=1)
    server.inject("get", 503, times=1)

    async def scenario(api: BatchApi) -> str:
        batch = await submit(api, source)
        return (await api.get(batch.id)).status

    assert run(scenario, server.base_url) == "in_progress"
    assert server.requests["upload"] == 3
    assert len(server.uploads) == 1


def test_retries_exhausted_is_endpoint_down(server: BatchServer, tmp_path: Path) -> None:
    server.inject("list", 502, times=10)
    with pytest.raises(EndpointDown, match="kept failing") as caught:
        run(lambda api: api.find_batch("file-x"), server.base_url, max_retries=2)
    assert caught.value.exit_code == 69
    assert server.requests["list"] == 3


def test_connection_failures_are_retried() -> None:
    """Unit: a reset and a timeout are retried; the third attempt's answer is used."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset")
        if len(calls) == 2:
            raise httpx.ReadTimeout("timed out")
        return httpx.Response(200, json={"id": "batch-1", "status": "completed"})

    info = run(
        lambda api: api.get("batch-1"),
        "http://batch.test/v4",
        transport=httpx.MockTransport(handler),
    )
    assert info.status == "completed"
    assert calls == ["/v4/batches/batch-1"] * 3


def test_download_streams_to_disk_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    """Unit: a body cut short leaves no target file; the retry writes it whole."""
    body = b"".join(b'{"n": %d}\n' % n for n in range(50_000))
    attempts = []

    async def cut() -> AsyncIterator[bytes]:
        yield body[:1000]
        raise httpx.ReadError("cut short")

    async def whole() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        return httpx.Response(200, content=cut() if len(attempts) == 1 else whole())

    target = tmp_path / "out.jsonl"
    size = run(
        lambda api: api.download("file-1", target),
        "http://batch.test/v4",
        transport=httpx.MockTransport(handler),
    )
    assert size == len(body) and target.read_bytes() == body
    assert len(attempts) == 2
    assert not target.with_name("out.jsonl.part").exists()


def test_the_simulated_batch_api_answers_every_line(tmp_path: Path) -> None:
    """--simulate in batch mode: upload, create, poll and download work offline, and each
    output line answers its own line's request (the simulated answer names its prompt size)."""
    prompts = {f"row-{n:04d}": "p" * n for n in range(1, 21)}
    source = write_lines(tmp_path / "in.jsonl", [line(c, p) for c, p in prompts.items()])
    job = Job(
        input_path=str(source),
        output_dir=str(tmp_path / "out"),
        simulate_rate_limited=0.0,
        simulate_server_error=0.0,
        simulate_latency=0.0,  # no pace: the batch is done at its first look
    )

    async def scenario(api: BatchApi) -> list[dict[str, Any]]:
        uploaded = await api.upload(source, "zbatch-sim.jsonl")
        assert await api.find_file("zbatch-sim.jsonl") == uploaded
        batch = await api.create(uploaded.id, endpoint=ENDPOINT, metadata={})
        assert batch.status == "validating"
        found = await api.find_batch(uploaded.id)
        assert found is not None and found.id == batch.id
        batch = await api.get(batch.id)
        assert batch.status == "completed" and batch.error_file_id is None
        assert batch.output_file_id is not None
        await api.download(batch.output_file_id, tmp_path / "out.jsonl")
        return read_jsonl(tmp_path / "out.jsonl")

    out = run(scenario, "https://simulated.invalid/api/paas/v4", transport=SimulatedBatchApi(job))
    assert sorted(item["custom_id"] for item in out) == sorted(prompts)
    for item in out:
        content = item["response"]["body"]["choices"][0]["message"]["content"]
        assert (
            content == f"Simulated answer ({len(prompts[item['custom_id']])} characters of prompt)."
        )
