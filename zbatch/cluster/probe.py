"""Is a Dask scheduler listening at an address? Asked before distributed's own client is.

distributed's client waits without bound on a listener that never answers (a silent TCP
port), and reads an HTTP server's reply (the dashboard's 8787 instead of the scheduler's 8786)
as a frame length, which ends in a MemoryError. A scheduler, unlike either, speaks first: on
accepting a connection it sends its handshake, one frame whose 8-byte little-endian length
header is small. So: connect, and wait a bounded time for such a header.
"""

from __future__ import annotations

import struct

import anyio

from ..errors import JobError

# A scheduler's handshake is a few hundred bytes; anything near this is not one.
MAX_HANDSHAKE_BYTES = 1 << 24


def connect_seconds() -> float:
    """Dask's own connect timeout (``distributed.comm.timeouts.connect``, 30 s by default;
    env ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``)."""
    import dask
    from dask.utils import parse_timedelta

    # distributed adds its defaults to dask's config when imported, which it is not yet here.
    given = dask.config.get("distributed.comm.timeouts.connect", default="30s")
    seconds = parse_timedelta(given, "s")
    return float(seconds or 30)


async def probe_scheduler(host: str, port: int, *, timeout: float, shown: str) -> None:
    """Return when a Dask scheduler greets at host:port; JobError saying what is there
    instead (nothing, something silent, something else) within ``timeout`` seconds."""
    hint = "start one, or check the address (a scheduler listens on 8786 by default)"
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host.strip("[]"), port)
    except TimeoutError:
        raise JobError(
            f"--cluster: nothing answered at {shown} within {timeout:g} s; {hint}"
        ) from None
    except OSError as exc:
        raise JobError(f"--cluster: no Dask scheduler answers at {shown} ({exc}); {hint}") from None
    async with stream:
        header = b""
        try:
            with anyio.fail_after(timeout):
                while len(header) < 8:
                    header += await stream.receive(8 - len(header))
        except TimeoutError:
            raise JobError(
                f"--cluster: {shown} accepted a connection but sent no Dask handshake within "
                f"{timeout:g} s: it is not a Dask scheduler (an HTTP port such as the "
                f"dashboard's 8787?); {hint}"
            ) from None
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            raise JobError(
                f"--cluster: {shown} closed the connection without a Dask handshake: it is "
                f"not a Dask scheduler; {hint}"
            ) from None
    (length,) = struct.unpack("<Q", header)
    if not 0 < length < MAX_HANDSHAKE_BYTES:
        raise JobError(
            f"--cluster: {shown} answered, but not as a Dask scheduler does ({header!r}); {hint}"
        )
