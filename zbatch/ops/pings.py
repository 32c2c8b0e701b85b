"""Dead-man's-switch pings, the healthchecks.io convention (Cronitor and others accept it):
``GET URL/start`` at launch, ``GET URL`` on success (exit 0), ``GET URL/<exit code>``
otherwise. A run killed outright leaves a start without an end, which the service reports
like a run that never came.

A ping never fails the run and never holds it up for long: the start ping goes out on a
thread of its own while the run begins; the end ping waits for it (so the two arrive in
order), then takes at most ``attempts`` tries of ``timeout`` seconds each.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import urllib.request

from .. import __version__
from ..errors import redact
from .secrets import shown_url

log = logging.getLogger("zbatch")
TIMEOUT = 2.0  # seconds per attempt
ATTEMPTS = 3
PAUSE = 0.5  # seconds between attempts


def ping_url(url: str, suffix: str) -> str:
    """``url`` with ``suffix`` ("/start", "/3", "") added to its path, before any query."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))


class Pinger:
    """Pings one URL at a run's start and end."""

    def __init__(
        self, url: str, *, timeout: float = TIMEOUT, attempts: int = ATTEMPTS, pause: float = PAUSE
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.attempts = attempts
        self.pause = pause
        self._start: threading.Thread | None = None

    def start(self) -> None:
        """``URL/start``, sent on a thread: the run does not wait for it."""
        self._start = threading.Thread(
            target=self.send, args=("/start",), name="zbatch-ping", daemon=True
        )
        self._start.start()

    def end(self, exit_code: int) -> None:
        """``URL`` on exit 0, else ``URL/<exit code>``; after the start ping is done with."""
        if self._start is not None:
            self._start.join(self.budget)
        self.send("" if exit_code == 0 else f"/{exit_code}")

    @property
    def budget(self) -> float:
        """The most one ping can take, all attempts together."""
        return self.attempts * self.timeout + (self.attempts - 1) * self.pause

    def send(self, suffix: str) -> bool:
        """One ping, tried up to ``attempts`` times; True when the service answered 2xx."""
        request = urllib.request.Request(
            ping_url(self.url, suffix), headers={"User-Agent": f"zbatch/{__version__}"}
        )
        problem = ""
        for attempt in range(self.attempts):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read(1024)
                return True
            except (OSError, ValueError) as exc:  # HTTPError and URLError are OSErrors
                problem = redact(f"{type(exc).__name__}: {exc}", self.url)
            if attempt + 1 < self.attempts:
                time.sleep(self.pause)
        log.warning(
            "ping %s%s failed after %d attempts (%s); the run goes on",
            shown_url(self.url),
            suffix,
            self.attempts,
            problem,
            extra={"event": "ping_failed"},
        )
        return False
