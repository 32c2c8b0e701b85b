"""What an OUTDIR has cost, and the budget check before each request.

    budget = Budget(max_cost=5.0, price=price, spent=ledger.usd, shared=reservations)
    hold = await budget.admit(prompt_tokens, max_tokens)   # None: it could pass the budget
    ...
    budget.release(hold); usd = budget.charge(answer, hold)

Spend counts every billed answer (also answers that failed a label or JSON check, label
re-asks, hedged duplicates), at the job's prices, and is kept in OUTDIR/spend.json across runs
and ``--force`` generations (see :class:`Spend` and :mod:`zbatch.store.journal`). An answer
whose usage is missing or unusable (not a number, NaN) is charged its worst case.

A request's worst case is its prompt estimate (the content's characters / 4, plus
:data:`TEMPLATE_TOKENS` for the chat template and the message framing, scaled up by the ratio
of billed to estimated prompt tokens seen so far) plus ``max_tokens``, at the job's price.

With a budget, every writer of the OUTDIR (whole runs, shards, cluster tasks, on local disk or
object storage) reserves the worst case of each request in :class:`Reservations` before it
is sent, so writers running at once cannot overshoot together: the budget binds
``spend ledgers + every live writer's reservations and unsettled spend``. A writer reserves a
block at a time (room for :data:`BLOCK_REQUESTS` more requests, at most a fair share of what is
left) and admits requests within it without writing; near the end of the budget the blocks
shrink to single requests.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Protocol

from .errors import StoreError
from .pricing import Price, cost

# Without max_tokens an answer has no bound; the budget check assumes this many tokens.
UNBOUNDED_ANSWER_TOKENS = 4096
# Prompt tokens a provider bills beyond the messages' text: the chat template's role markers,
# message framing and the assistant primer (GLM and OpenAI chat templates: 3-8 per message).
TEMPLATE_TOKENS = 32
# The shared reservations of an OUTDIR: OUTDIR/budget/{n:012d}.json, each a whole snapshot
# made create-only from the one before (compare-and-swap on local disk and object storage).
RESERVATIONS = "budget"
# A writer renews its entry this often; one not renewed for LEASE_SECONDS has died (kill -9):
# its reservations no longer count (its journal's spend reaches the ledger on replay).
RENEW_SECONDS = 5.0
LEASE_SECONDS = 60.0
KEEP_SNAPSHOTS = 8
# A writer reserves a block for this many more requests at a time (at the current one's worst
# case), at most a fair share of what is left: one write per block, not per request.
BLOCK_REQUESTS = 32
# Snapshots read and tried in a row before giving up (each lost race means another writer
# got its change in: with a few dozen writers this is never reached).
MAX_TRIES = 1000


@dataclass
class Spend:
    """Tokens and USD of billed answers (the durable ledger, or a part of it)."""

    usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    answers: int = 0
    journals: list[str] = field(default_factory=list)  # journals whose spend is included

    def add(self, other: Spend) -> None:
        self.usd += other.usd
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.answers += other.answers

    def count(self, answer: Any, usd: float) -> None:
        """Add one billed answer (anything with the usage fields of a Success) costing ``usd``."""
        self.usd += usd
        self.prompt_tokens += answer.prompt_tokens or 0
        self.completion_tokens += answer.completion_tokens or 0
        self.cached_tokens += answer.cached_tokens or 0
        self.answers += 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spend:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(slots=True)
class Hold:
    """A request's reservation: its worst case, and the estimate it was made from."""

    usd: float
    prompt_tokens: int  # the content estimate (characters / 4)
    answer_tokens: int  # max_tokens (0: unbounded)


class ReservationStorage(Protocol):
    """The part of zbatch's Storage the reservations use."""

    def read_bytes(self, name: str) -> bytes | None: ...

    def create(self, name: str, write: Callable[[BinaryIO], object]) -> None: ...

    def list(self, folder: str) -> list[str]: ...

    def delete(self, name: str) -> None: ...


class Reservations:
    """Every live writer's reserved worst cases and unsettled spend, for one OUTDIR.

    Each change writes the next snapshot create-only (a compare-and-swap: a writer that loses
    the race reads again), so a check and its reservation are one step for all writers.
    ``settled`` reads the spend already in the OUTDIR's ledgers (and the worst cases of its
    open batches); it is read after the snapshot, so a writer settling meanwhile is counted
    twice (never not at all)."""

    def __init__(
        self,
        storage: ReservationStorage,
        writer: str,
        settled: Callable[[], float],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self.writer = writer
        self._settled = settled
        self._clock = clock
        self.used = 0.0  # the OUTDIR's spend + every reservation, as of the last check
        self.spent = 0.0  # the OUTDIR's spend (settled or not), as of the last check

    def publish(
        self, minimum: float, wanted: float, unsettled: float, *, max_cost: float | None = None
    ) -> float | None:
        """Publish this writer's unsettled spend and a block of at least ``minimum`` USD for
        its requests (``wanted`` if the budget has room for it beside the other writers'
        fair shares); the block granted, or None when not even ``minimum`` fits ``max_cost``
        (then nothing changed)."""
        for _ in range(MAX_TRIES):
            seq, entries = self._latest()
            now = self._clock()
            live = {
                writer: entry
                for writer, entry in entries.items()
                if writer != self.writer and now - float(entry.get("at", 0)) < LEASE_SECONDS
            }
            held = sum(_number(e.get("reserved")) for e in live.values())
            spent = sum(_number(e.get("unsettled")) for e in live.values()) + unsettled
            self.spent = self._settled() + spent
            base = self.spent + held
            grant = wanted
            if max_cost is not None:
                left = max_cost - base
                if minimum > left:
                    self.used = base
                    return None
                # Leave the others room: take at most a share of what is left beyond minimum.
                grant = minimum + min(wanted - minimum, (left - minimum) / (len(live) + 2))
            if grant > 0 or unsettled > 0:
                live[self.writer] = {"reserved": grant, "unsettled": unsettled, "at": now}
            if self._write(seq + 1, live):
                self.used = base + grant
                return grant
        raise StoreError(_BUSY)

    def leave(self) -> None:
        """This writer has stopped with everything settled: drop its entry."""
        self.publish(0.0, 0.0, 0.0)

    def figures(self) -> dict[str, Any]:
        """What ``status`` shows: the live writers' reserved and unsettled USD."""
        _, entries = self._latest()
        now = self._clock()
        live = [e for e in entries.values() if now - float(e.get("at", 0)) < LEASE_SECONDS]
        return {
            "writers": len(live),
            "reserved_usd": round(sum(_number(e.get("reserved")) for e in live), 6),
            "unsettled_usd": round(sum(_number(e.get("unsettled")) for e in live), 6),
        }

    def _latest(self) -> tuple[int, dict[str, dict[str, Any]]]:
        for _ in range(MAX_TRIES):
            names = [n for n in self._storage.list(RESERVATIONS) if _seq(n) is not None]
            if not names:
                return 0, {}
            newest = max(names, key=lambda n: _seq(n) or 0)
            data = self._storage.read_bytes(f"{RESERVATIONS}/{newest}")
            if data is not None:  # else pruned meanwhile: list again
                try:
                    entries = json.loads(data)["writers"]
                except (ValueError, KeyError, TypeError):
                    entries = {}  # damaged: the next snapshot starts it afresh
                return _seq(newest) or 0, entries if isinstance(entries, dict) else {}
        raise StoreError(_BUSY)

    def _write(self, seq: int, entries: dict[str, dict[str, Any]]) -> bool:
        data = json.dumps({"writers": entries}).encode()
        try:
            self._storage.create(f"{RESERVATIONS}/{seq:012d}.json", lambda h: h.write(data))
        except FileExistsError:
            return False  # another writer changed it first: read again
        if seq > KEEP_SNAPSHOTS:
            self._storage.delete(f"{RESERVATIONS}/{seq - KEEP_SNAPSHOTS:012d}.json")
        return True


_BUSY = (
    f"the budget reservations in OUTDIR/{RESERVATIONS}/ changed under every one of "
    f"{MAX_TRIES} tries; fewer writers at once (shards, cluster tasks), then run the same command"
)


def _seq(name: str) -> int | None:
    stem = name.removesuffix(".json")
    return int(stem) if name.endswith(".json") and stem.isdigit() else None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


class Budget:
    """Admission control: a request goes out only if its worst case still fits the budget.

    The worst case is the prompt estimate plus the answer bound (max_tokens) at the job's
    price; what counts against the limit is the spend so far plus the worst cases of every
    request in flight, so concurrent requests cannot overshoot together; with ``shared``,
    those of every writer of the OUTDIR."""

    def __init__(
        self,
        *,
        max_cost: float | None,
        price: Price | None,
        spent: float,
        shared: Reservations | None = None,
    ) -> None:
        self.max_cost = max_cost
        self.price = price
        self.spent = spent
        self.reserved = 0.0
        self.shared = shared if max_cost is not None else None
        self.unsettled = 0.0  # charged by this run and not yet in its spend ledger
        self.worst_charged = 0  # answers with missing or unusable usage, charged worst case
        self._estimated = 0  # prompt estimates (with TEMPLATE_TOKENS) of answers with usage
        self._billed = 0  # ... and the prompt tokens billed for them
        self._turn: Any = None  # an anyio.Lock, made in the run's loop: one publish at a time
        self._block = 0.0  # USD this writer's published entry reserves for its requests
        self._published_unsettled = 0.0  # its unsettled spend as last published

    def prompt_bound(self, prompt_tokens: int) -> int:
        """The prompt tokens a request may be billed: its estimate with the template's
        overhead, scaled by the billed / estimated ratio of the answers so far (never down)."""
        estimate = prompt_tokens + TEMPLATE_TOKENS
        if self._estimated and self._billed > self._estimated:
            return math.ceil(estimate * self._billed / self._estimated)
        return estimate

    def worst_case(self, prompt_tokens: int, answer_tokens: int) -> float:
        bound = answer_tokens or UNBOUNDED_ANSWER_TOKENS
        return cost(self.price, self.prompt_bound(prompt_tokens), 0, bound) or 0.0

    async def admit(self, prompt_tokens: int, answer_tokens: int) -> Hold | None:
        """Reserve a request's worst case; None when it could take the spend past the limit."""
        if self.max_cost is None:
            return Hold(0.0, prompt_tokens, answer_tokens)  # nothing to reserve against
        hold = Hold(self.worst_case(prompt_tokens, answer_tokens), prompt_tokens, answer_tokens)
        if self.shared is not None:
            if self._in_block(hold.usd):  # no write: the block published covers it
                self.reserved += hold.usd
                return hold
            return hold if await self.publish(hold.usd, BLOCK_REQUESTS * hold.usd) else None
        if self.spent + self.reserved + hold.usd > self.max_cost:
            return None
        self.reserved += hold.usd
        return hold

    def _in_block(self, usd: float) -> bool:
        """Whether the block this writer published still covers ``usd`` more: its requests in
        flight and what it was charged since it published must stay within it."""
        return self.reserved + self.unsettled - self._published_unsettled + usd <= self._block

    async def publish(self, extra: float = 0.0, headroom: float = 0.0) -> bool:
        """Publish this writer's block and unsettled spend to the other writers; with
        ``extra``, reserve that much more (and up to ``headroom`` beyond it for the requests to
        come) if it still fits the budget (False: it does not). Without, a renewal that keeps
        what the last block covered."""
        import anyio  # with the run only

        shared = self.shared
        if shared is None:
            return True
        if self._turn is None:
            self._turn = anyio.Lock()
        async with self._turn:  # a publish carries this writer's whole figures: one at a time
            if extra and self._in_block(extra):  # another request's publish made room
                self.reserved += extra
                return True
            unsettled = self.unsettled
            need = self.reserved + extra
            if extra:
                wanted, cap = need + headroom, self.max_cost
            else:  # the same cover as before: the block, less what is now unsettled
                wanted = max(need, self._block - (unsettled - self._published_unsettled))
                cap = None
            granted = await anyio.to_thread.run_sync(
                functools.partial(shared.publish, need, wanted, unsettled, max_cost=cap)
            )
            self.spent = shared.spent
            if granted is None:
                return False
            self._block, self._published_unsettled = granted, unsettled
            self.reserved += extra
        return True

    async def renew(self) -> None:
        """Keep this writer's entry in the shared reservations alive until cancelled."""
        import anyio

        while self.shared is not None:
            await anyio.sleep(RENEW_SECONDS)
            await self.publish()

    def settled(self, unsettled: float) -> None:
        """This run's spend ledger was written: ``unsettled`` USD of it are not in it yet.
        What moved into the ledger leaves the published figure too, so the block keeps
        counting what this writer was charged since it published."""
        self._published_unsettled -= self.unsettled - unsettled
        self.unsettled = unsettled

    def leave(self) -> None:
        """The run ended with its spend settled: its reservations go."""
        if self.shared is not None:
            self.shared.leave()

    def release(self, hold: Hold) -> None:
        self.reserved = max(0.0, self.reserved - hold.usd)

    def hand_over(self, usd: float) -> None:
        """A reservation is now held durably elsewhere (an open batch's record)."""
        self.reserved = max(0.0, self.reserved - usd)
        self._block = max(0.0, self._block - usd)

    def bill(self, answer: Any, hold: Hold | None, stats: Any, *, hedge: bool = False) -> float:
        """:meth:`charge`, counted in ``stats`` (a Stats): answers charged their worst case,
        and hedges' second answers."""
        worst = self.worst_charged
        usd = self.charge(answer, hold)
        if self.worst_charged != worst:
            stats.worst_charged += 1
            stats.worst_charged_usd += usd
        if hedge:
            stats.hedged_usd += usd
        return usd

    def charge(self, answer: Any, hold: Hold | None = None) -> float:
        """Add one billed answer (anything with the usage fields of a Success) to the spend;
        returns what it cost. Without usable usage, it costs its request's worst case."""
        prompt, completion = answer.prompt_tokens, answer.completion_tokens
        if prompt is None or completion is None or answer.usage_malformed:
            self.worst_charged += 1
            if hold is None:
                usd = self.worst_case(0, 0)
            else:
                usd = hold.usd or self.worst_case(hold.prompt_tokens, hold.answer_tokens)
        else:
            usd = cost(self.price, prompt, answer.cached_tokens or 0, completion) or 0.0
            if hold is not None and hold.prompt_tokens:
                self._estimated += hold.prompt_tokens + TEMPLATE_TOKENS
                self._billed += prompt
        self.spent += usd
        self.unsettled += usd
        return usd

    def message(self) -> str:
        return (
            f"budget reached: spent ${self.spent:.4f} of ${self.max_cost or 0:.4f}; "
            "raise --max-cost (limits.max_cost) to continue"
        )
