"""Monitoring URLs as they may be shown: a ping URL's path is often its secret."""

from __future__ import annotations

import urllib.parse


def shown_url(url: str | None) -> str | None:
    """``url`` with everything but its scheme and host hidden: "https://hc-ping.com/…"."""
    if url is None:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "…"
    if not parts.scheme or not host:
        return "…"
    hidden = "/…" if parts.path.strip("/") or parts.query or parts.username else ""
    return f"{parts.scheme}://{host}{port}{hidden}"
