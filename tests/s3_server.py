"""A local S3 for tests: moto's ThreadedMotoServer on 127.0.0.1, reached as real S3 would be.

A test module takes the fixtures with ``from s3_server import moto_endpoint_fixture,
s3_fixture`` and asks for ``s3`` (or ``moto_endpoint``) by name.

zbatch finds it the way it finds AWS: through the environment (``AWS_ENDPOINT_URL`` and the
usual credential variables), so the installed ``zbatch`` script run as a subprocess uses it too.
The secret key is a long random-looking value, so a test can look for it in every byte zbatch
wrote or printed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

SECRET_KEY = "zbatch-test-secret-" + "9f3c1a7e5b2d4c6e8a0b"
ACCESS_KEY = "AKIAZBATCHTESTKEY001"


@dataclass
class S3:
    """The running server, a bucket of the test's own, and the environment that reaches it."""

    endpoint: str
    bucket: str
    env: dict[str, str]
    _fs: Any = None

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def fs(self) -> Any:
        """A client of the test's own (made once: making one takes a good part of a second)."""
        if self._fs is None:
            self._fs = self._client()
        return self._fs

    def _client(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint,
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            use_listings_cache=False,
            skip_instance_cache=True,
        )


@pytest.fixture(name="moto_endpoint", scope="session")
def moto_endpoint_fixture() -> Iterator[str]:
    """One moto S3 server on loopback for the whole session (each test has its own bucket)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment a process needs to reach the test server as its S3."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        # No ~/.aws files of the machine running the tests.
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


@pytest.fixture(name="s3")
def s3_fixture(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the loopback S3, and this process's environment pointing at it."""
    env = s3_env(moto_endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    store = S3(moto_endpoint, f"zb-{secrets.token_hex(6)}", env)
    store.fs().mkdir(store.bucket)
    return store
