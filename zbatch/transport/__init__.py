"""zbatch's HTTP transports: httpx's request and response types, sent by zbatch's own
HTTP/1.1 client (:mod:`.http11`, plain http:// without a proxy) or by aiohttp (:mod:`.aio`:
https, proxies). Each is imported only by a run that uses it (aiohttp alone is ~10 MB).

The runner only ever sees httpx: both are ``httpx.AsyncBaseTransport`` subclasses (a
:class:`Shipped`), so tests can swap in ``httpx.MockTransport``; zbatch's Client sends through
a Shipped transport's :meth:`Shipped.post`, past httpx's request and response objects. What
both share is here: the :class:`Reply`, the decoded response, the timers a total deadline
covers, the proxy taken from the environment.
"""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import httpx

from ..errors import JobError, redact

_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_DECODED_AWAY = frozenset({b"content-encoding", b"content-length"})


class Reply(NamedTuple):
    """An answer read whole (:meth:`Shipped.post`): the parts zbatch's Client reads."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes  # decoded (gzip, deflate)


class Shipped(httpx.AsyncBaseTransport):
    """A transport zbatch ships: its Client sends through :meth:`post`."""

    async def post(
        self,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> Reply:
        """POST ``body`` and read the whole answer; failures raise httpx's TransportErrors,
        as ``handle_async_request`` does."""
        raise NotImplementedError


def decoded_response(
    request: httpx.Request,
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    content: bytes,
) -> httpx.Response:
    """httpx's Response for an answer whose body ``content`` is already decoded: without the
    Content-Encoding and Content-Length that described it on the wire."""
    if any(name.lower() == b"content-encoding" for name, _ in headers):
        headers = [(name, value) for name, value in headers if name.lower() not in _DECODED_AWAY]
    return httpx.Response(
        status,
        headers=headers,
        content=content,
        request=request,
        extensions={"reason_phrase": reason},
    )


def uncovered(timeouts: Mapping[str, float | None], name: str) -> float | None:
    """httpx's timeout ``name``, or None where zbatch's ``total`` deadline already covers it: a
    timer costs a loop timer per request (aiohttp's read timer one per chunk received)."""
    total, value = timeouts.get("total"), timeouts.get(name)
    return None if total is not None and value is not None and value >= total else value


def credentials(url: str | None) -> list[str]:
    """The ``user:password`` part of a URL, as written and percent-decoded (read without a URL
    parser, so that even a malformed URL gives up its secrets for redaction)."""
    authority = _AUTHORITY.match(url or "")
    userinfo = authority.group(1).rpartition("@")[0] if authority else ""
    return sorted({userinfo, urllib.parse.unquote(userinfo)} - {""}, key=len, reverse=True)


def check_proxy(url: str, setting: str) -> None:
    """Refuse a proxy URL aiohttp cannot use, naming ``setting`` but never the URL (it may
    hold a password); aiohttp would fail every request on it, one row at a time."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- reading it is the check: a port that is not a number raises
    except ValueError as exc:  # its text may quote the URL's user:password
        problem = redact(str(exc), *credentials(url))
    else:
        if parts.scheme not in ("http", "https"):
            problem = f"zbatch supports http:// and https:// proxies, not {parts.scheme}://"
        elif not parts.hostname:
            problem = "it names no host"
        else:
            return
    raise JobError(f"{setting} is not a usable proxy URL ({problem}): fix it or unset it")


def env_proxy(url: httpx.URL) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / ALL_PROXY name for ``url``, unless NO_PROXY
    exempts its host.

    Looked up once per run: aiohttp's own ``trust_env`` looks it up again for every request,
    which cost more CPU than the rest of the request (docs/performance.md).
    """
    proxies = urllib.request.getproxies_environment()
    scheme = url.scheme if proxies.get(url.scheme) else "all"
    address = proxies.get(scheme)
    if not address or urllib.request.proxy_bypass(url.host):
        return None
    address = address if "://" in address else f"http://{address}"
    check_proxy(address, f"{scheme.upper()}_PROXY")
    return address
