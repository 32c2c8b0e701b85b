"""Identical requests within a run are sent once; every row that asked gets the answer.

Only for deterministic requests (temperature 0, or ``do_sample = false``): the same body
then asks for the same answer. The first row with a body leads and is sent; a later row with
the same body waits for the leader and, if the leader got an answer, takes it with
``attempts = 0`` (its tokens were paid once, by the leader). Memory stays bounded: the
answers of the last ``capacity`` distinct bodies are remembered.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio

from ..job.settings import Job
from ..pipeline import RowPipeline, Work

CAPACITY = 65_536


def deterministic(job: Job) -> bool:
    """Whether the job's requests ask for the same answer every time."""
    return job.temperature == 0 or job.extra.get("do_sample") is False


@dataclass(slots=True)
class _Entry:
    answer: Any = None  # the leader's answer (a Success), once it has one
    done: bool = False
    # Made by the first row that waits: most bodies are never repeated, and an Event per
    # remembered body cost more CPU per row than the rest of the dedupe.
    waiters: anyio.Event | None = None


class SharedAnswers:
    """Hands a leader's answer to later rows with the same request body."""

    def __init__(self, pipeline: RowPipeline, *, capacity: int = CAPACITY) -> None:
        self.pipeline = pipeline
        self._capacity = capacity
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # The entries of the rows leading now, by id: the body is hashed once per row.
        self._leading: dict[str, _Entry] = {}

    async def reuse(self, work: Work) -> bool:
        """True when ``work`` was answered by an identical earlier request; otherwise it
        leads (or, if its leader got no answer, goes on its own) and the caller sends it."""
        key = hashlib.blake2b(work.body, digest_size=16).digest()
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = self._leading[work.id] = _Entry()
            self._forget_oldest()
            return False
        self._entries.move_to_end(key)
        if entry.done:  # still a checkpoint, as Event.wait is: a run of repeats lets others run
            await anyio.lowlevel.checkpoint()
        else:
            if entry.waiters is None:
                entry.waiters = anyio.Event()
            await entry.waiters.wait()
        if entry.answer is None:
            return False
        answer, pipeline = entry.answer, self.pipeline
        pipeline.stats.count_deduplicated(answer)
        failure = pipeline.accept(work, answer, 0)
        if failure is not None:
            pipeline.fail(work.id, failure, 0, answer=answer.content)
        return True

    def resolve(self, work: Work, answer: Any) -> None:
        """The answer ``work`` settled with (called by the dispatcher for a leader)."""
        entry = self._leading.get(work.id)
        if entry is not None:
            entry.answer = answer

    def settle(self, work: Work) -> None:
        """The leader is done, with or without an answer: wake the rows waiting on it."""
        entry = self._leading.pop(work.id, None)
        if entry is not None:
            entry.done = True
            if entry.waiters is not None:
                entry.waiters.set()

    def _forget_oldest(self) -> None:
        while len(self._entries) > self._capacity:
            key, entry = next(iter(self._entries.items()))
            if not entry.done:
                return  # still in flight: kept until it is done
            del self._entries[key]
