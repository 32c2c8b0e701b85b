"""Provider profiles, and the choice of one for a job."""

from __future__ import annotations

import urllib.parse

from ..errors import JobError
from .base import SCHEMA_FORMS, Provider
from .openai import OPENAI
from .zai import ZAI

PROVIDERS = {profile.name: profile for profile in (ZAI, OPENAI)}
_ZAI_HOSTS = ("z.ai", "bigmodel.cn")

__all__ = ["OPENAI", "PROVIDERS", "SCHEMA_FORMS", "ZAI", "Provider", "provider_for"]


def provider_for(base_url: str, name: str | None = None) -> Provider:
    """The profile named ``name`` ("zai" | "openai"), else the one ``base_url`` points at.

    Z.AI when the host is api.z.ai / open.bigmodel.cn (or another host under z.ai or
    bigmodel.cn), or when the path ends in Z.AI's own ``/paas/v4`` (a gateway or a test server
    in front of it keeps that path); every other URL is an OpenAI-compatible server.
    """
    if name is not None:
        try:
            return PROVIDERS[name]
        except KeyError:
            choices = " or ".join(repr(known) for known in PROVIDERS)
            raise JobError(f"endpoint.provider must be {choices}, not {name!r}") from None
    try:
        parts = urllib.parse.urlsplit(base_url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise JobError(f"endpoint.base_url is not a URL ({exc})") from None
    host = (parts.hostname or "").rstrip(".")
    if any(host == zone or host.endswith("." + zone) for zone in _ZAI_HOSTS):
        return ZAI
    if parts.path.rstrip("/").endswith("/paas/v4"):
        return ZAI
    return OPENAI
