"""How --cluster is named, and what a bad name says."""

from __future__ import annotations

import pytest

from zbatch.cluster.driver import ClusterSpec
from zbatch.errors import JobError
from zbatch.execution.options import RunOptions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:2", ClusterSpec(address=None, workers=2)),
        ("local:16", ClusterSpec(address=None, workers=16)),
        ("dask://10.0.0.5:8786", ClusterSpec(address="tcp://10.0.0.5:8786", workers=0)),
        ("dask://scheduler:8786", ClusterSpec(address="tcp://scheduler:8786", workers=0)),
        ("tls://scheduler:8786", ClusterSpec(address="tls://scheduler:8786", workers=0)),
    ],
)
def test_parse(text: str, expected: ClusterSpec) -> None:
    assert ClusterSpec.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local:0", "--cluster local:N needs at least 1 worker process, not 0"),
        ("local:x", "--cluster local:N needs a whole number of worker processes, not 'x'"),
        ("local", "--cluster: expected dask://HOST:PORT or local:N, not 'local'"),
        ("dask://", "--cluster: expected dask://HOST:PORT or local:N, not 'dask://'"),
        ("dask://host", "--cluster: expected dask://HOST:PORT or local:N, not 'dask://host'"),
        ("http://host:1", "--cluster: expected dask://HOST:PORT or local:N, not 'http://host:1'"),
    ],
)
def test_bad_specs_are_one_line_job_errors(text: str, message: str) -> None:
    with pytest.raises(JobError) as caught:
        ClusterSpec.parse(text)
    assert str(caught.value) == message


def test_run_options_never_show_the_api_key() -> None:
    """The API key travels to the workers inside the task's RunOptions, which Dask prints in
    its logs when a task fails: their repr must not show it."""
    options = RunOptions(api_key="sk-very-secret", retry_failed=True)
    assert "sk-very-secret" not in repr(options)
    assert "sk-very-secret" not in str(options)
    assert "sk-very-secret" not in repr((options,))
    assert "retry_failed=True" in repr(options)
    assert options.api_key == "sk-very-secret"
