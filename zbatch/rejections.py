"""Telling a concurrency cap from a storm of rejections, by the in-flight level of each request.

    judge = Rejections(ceiling=48)
    judge.record(level, rejected=True)   # each answer, with how many were in flight at its start
    judge.cap_evidence()                 # Split(cap=6, ...) when a cap explains the rejections
    judge.noise()                        # True when no cap can: a storm or background noise

A server that caps in-flight requests at C rejects what is sent above C in flight and nothing
at or under it: its rejections *track* the in-flight level. A storm, or a provider's
background noise, rejects a share of requests whatever the level. So each answer is counted
at its start level (the client's in-flight count, the request itself included; it is never
below the server's, so a cap at C rejects nothing started at C or under), and two models are
weighed on those counts: one rejection share for every level (a storm), or a share at and
under some level C and a high one above it (a cap at C). The cap wins only when it explains
the counts far better (a likelihood ratio of ``CAP_EVIDENCE``) and rejects most of what is
above it; the storm wins when enough answers came back and no level splits them that way.

Counts are halved every ``window`` answers, so old evidence fades as the server changes.
Nothing here reads a clock: the outcomes are the only input, and tests script them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# ln(400): a cap must make the counts 400 times likelier than one share for every level.
CAP_EVIDENCE = 6.0
# A cap rejects most requests above it: at least this share of them.
CAP_ABOVE = 0.5
# ... and far fewer at or under it (background noise may add some).
CAP_CONTRAST = 3.0
# Answers needed before rejections that fit no cap are called noise ...
NOISE_ANSWERS = 16
# ... and how weakly (ln 7) the best cap may fit them then.
NOISE_EVIDENCE = 2.0


@dataclass(frozen=True)
class Split:
    """The best cap the counts support: rejections at and under ``cap``, and above it."""

    cap: int
    rejected_under: float
    answers_under: float
    rejected_above: float
    answers_above: float
    evidence: float  # log-likelihood ratio of the cap model over one share

    def describe(self) -> str:
        return (
            f"{_count(self.rejected_above)} of {_count(self.answers_above)} requests started "
            f"above {self.cap} in flight were rejected, {_count(self.rejected_under)} of "
            f"{_count(self.answers_under)} at or under it"
        )


class Rejections:
    """Per-level counts of answers and rejections, and what they say (module docstring)."""

    def __init__(self, ceiling: int, *, window: int | None = None) -> None:
        self.ceiling = ceiling
        self.window = window or max(256, 8 * ceiling)
        self._answers = [0.0] * (ceiling + 1)  # index: start level, 1..ceiling
        self._rejected = [0.0] * (ceiling + 1)
        self._top = 0  # highest level with counts
        self._since_halving = 0
        self.answers = 0.0  # totals over the current counts
        self.rejected = 0.0

    def record(self, level: int, rejected: bool) -> None:
        level = min(max(level, 1), self.ceiling)
        self._answers[level] += 1
        self.answers += 1
        if rejected:
            self._rejected[level] += 1
            self.rejected += 1
        if level > self._top:
            self._top = level
        self._since_halving += 1
        if self._since_halving >= self.window:
            self._halve()

    def _halve(self) -> None:
        self._since_halving = 0
        answers, rejected = self._answers, self._rejected
        for level in range(1, self._top + 1):
            answers[level] /= 2
            rejected[level] /= 2
        self.answers /= 2
        self.rejected /= 2

    @property
    def top(self) -> int:
        """The highest start level with counts."""
        return self._top

    @property
    def share(self) -> float:
        """The share of answers that were rejections, all levels together."""
        return self.rejected / self.answers if self.answers else 0.0

    def best_split(self) -> Split | None:
        """The level that best splits the counts into a cap (few rejections at and under it,
        most above), or None when no level does."""
        total, rejected = self.answers, self.rejected
        if rejected <= 0:
            return None
        one_share = _log_likelihood(rejected, total)
        best: Split | None = None
        under = rejected_under = 0.0
        answers, rejections = self._answers, self._rejected
        for level in range(1, self._top):
            under += answers[level]
            rejected_under += rejections[level]
            above, rejected_above = total - under, rejected - rejected_under
            if under <= 0 or rejected_above <= 0:
                continue
            high = rejected_above / above
            if high < CAP_ABOVE or rejected_under / under * CAP_CONTRAST > high:
                continue
            evidence = (
                _log_likelihood(rejected_under, under)
                + _log_likelihood(rejected_above, above)
                - one_share
            )
            if best is None or evidence >= best.evidence:  # a tie: the higher level
                best = Split(level, rejected_under, under, rejected_above, above, evidence)
        return best

    def cap_evidence(self) -> Split | None:
        """The best split when it is strong enough to call a cap."""
        split = self.best_split()
        return split if split is not None and split.evidence >= CAP_EVIDENCE else None

    def noise(self) -> bool:
        """Rejections came, enough answers came back, and no level splits them like a cap
        (or only weakly). Not while every rejection is above levels that have not answered
        yet: then a cap just under them is still untested."""
        if self.rejected <= 0 or self.answers < NOISE_ANSWERS:
            return False
        answers, rejections = self._answers, self._rejected
        lowest = next(lvl for lvl in range(1, self._top + 1) if rejections[lvl] > 0)
        if lowest > 1 and not any(answers[1:lowest]):
            above = sum(answers[lowest : self._top + 1])
            if self.rejected >= CAP_ABOVE * above:
                return False
        split = self.best_split()
        return split is None or split.evidence < NOISE_EVIDENCE

    def levels(self) -> tuple[int, int]:
        """The lowest and highest start levels with answers counted."""
        low = next((lvl for lvl in range(1, self._top + 1) if self._answers[lvl] > 0), 0)
        return low, self._top


def _log_likelihood(rejected: float, answers: float) -> float:
    """ln P(counts | one share, its best estimate)."""
    if answers <= 0:
        return 0.0
    share = rejected / answers
    value = 0.0
    if rejected > 0:
        value += rejected * math.log(share)
    if answers - rejected > 0:
        value += (answers - rejected) * math.log(1.0 - share)
    return value


def _count(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
