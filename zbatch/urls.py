"""Locations that are URLs: s3://, gs:// (object storage, through fsspec) and file://.

Object storage is reached through fsspec's s3fs / gcsfs (the extras ``zbatch[s3]`` and
``zbatch[gcs]``), which take their endpoint and credentials from each library's usual
environment and config files (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...); zbatch never passes or stores any. Why fsspec and not
``pyarrow.fs``: only fsspec writes create-only (S3 ``If-None-Match: *``, GCS
``ifGenerationMatch=0``), see docs/performance.md "Object storage".
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from .errors import JobError, redact

# scheme -> (the fsspec implementation's module, the zbatch extra that installs it)
BACKENDS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
# Reads fetch, and writes upload (multipart above it), blocks of this size: few requests,
# and a bounded buffer per open file (s3fs's default is 50 MB; gcsfs's is 5 MB already).
BLOCK_BYTES = 8 * 1024 * 1024
# Environment variables whose values must never reach a message.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The environment each client library reads its endpoint, credentials and config from.
_ENV_PREFIXES = {"s3fs": ("AWS_",), "gcsfs": ("GOOGLE_", "GCE_", "GCS_", "CLOUDSDK_")}
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@\"']*@")


def scheme(location: str) -> str | None:
    """The URL scheme of a location ("s3", "gs", "file"), or None for a plain local path."""
    head, sep, _ = location.partition("://")
    return head.lower() if sep and re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", head) else None


def is_remote(location: str) -> bool:
    """True for a location in object storage (s3://, gs://)."""
    return scheme(location) in BACKENDS


def local_path(location: str) -> str:
    """A local location as a path: file:///x -> /x; a plain path unchanged."""
    return location.removeprefix("file://") if scheme(location) == "file" else location


_STORE_PREFIX = re.compile(r"(?i)(s3|gs|gcs):")
_STORE_URL = re.compile(r"(?i)(s3|gs|gcs)://[^/\s]+(/.*)?", re.DOTALL)


def looks_remote(location: str) -> bool:
    """True for a location written as an object-store URL, well-formed or not."""
    return _STORE_PREFIX.match(location) is not None


def check_scheme(location: str, what: str) -> None:
    """JobError for a URL scheme zbatch cannot read or write, and for a location that starts
    like an object-store URL but is not one (``s3:/x``, ``s3://``, ``gs:``), which would
    otherwise become a local folder of that odd name and lose the results with the disk."""
    start = _STORE_PREFIX.match(location)
    if start is not None and not _STORE_URL.fullmatch(location):
        kind = start.group(1).lower()
        raise JobError(
            f"{what} {safe(location)} is not a valid {kind}:// URL: write it as "
            f"{kind}://BUCKET/PATH (for a local folder of that name, write ./{safe(location)})"
        )
    kind = scheme(location)
    if kind is not None and kind != "file" and kind not in BACKENDS:
        raise JobError(
            f"{what} {safe(location)}: {kind}:// is not supported; use a local path, "
            "file://, s3:// or gs://"
        )


def bucket_path(url: str) -> str:
    """The path fsspec uses for a URL: "s3://bucket/a/b/" -> "bucket/a/b"."""
    return url.partition("://")[2].strip("/")


def filesystem(url: str) -> Any:
    """The fsspec filesystem for an s3:// or gs:// URL; JobError naming the extra if missing.

    One per process and environment: a client holds its own copy of the service's API model
    (16 MB for S3), and it reads the endpoint and credentials from the environment when it is
    made, which a library user may change between two jobs. Listings are never cached: a
    listing must show parts another run committed a moment ago.
    """
    module, extra = BACKENDS[scheme(url) or ""]
    try:
        imported = __import__(module)
    except ImportError:
        raise JobError(
            f"{safe(url)} needs the {extra} extra: pip install 'zbatch[{extra}]'"
        ) from None
    prefixes = _ENV_PREFIXES[module]
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes)))
    key = (module, os.getpid(), env)  # a forked child makes its own (fsspec's loop is per pid)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _make_filesystem(imported)
        return _clients[key]


def _make_filesystem(imported: Any) -> Any:
    options = {"use_listings_cache": False, "skip_instance_cache": True}
    if imported.__name__ == "s3fs":
        return imported.S3FileSystem(default_block_size=BLOCK_BYTES, **options)
    return imported.GCSFileSystem(**options)


def backend_errors(fs: Any) -> tuple[type[Exception], ...]:
    """What a filesystem's calls raise when the store fails: OSError (fsspec maps most errors
    to it) and the client library's own errors (e.g. botocore's connection errors)."""
    if type(fs).__module__.startswith("s3fs"):
        from botocore.exceptions import BotoCoreError

        return (OSError, BotoCoreError)
    from gcsfs.retry import HttpError
    from google.auth.exceptions import GoogleAuthError

    return (OSError, HttpError, GoogleAuthError)


def safe(text: str) -> str:
    """``text`` without credentials: no URL userinfo, no credential values from the environment.

    For every message that may quote a backend's error (which can hold the endpoint URL).
    """
    text = _USERINFO.sub(r"\1", text)
    return redact(text, *(os.environ.get(name, "") for name in _SECRET_ENV))


def access_error(url: str, what: str, exc: Exception) -> JobError:
    """The one message for a location that cannot be used: missing, no permission, unreachable."""
    why = safe(str(exc))
    if isinstance(exc, PermissionError):
        return JobError(
            f"{what} {safe(url)}: no permission ({why}); check the credentials in the "
            "environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) "
            "and the bucket's policy"
        )
    if isinstance(exc, FileNotFoundError):
        return JobError(f"{what} {safe(url)} does not exist ({why})")
    return JobError(
        f"{what} {safe(url)} cannot be reached ({why}); check the endpoint "
        "(AWS_ENDPOINT_URL) and the network"
    )
