"""Which rows belong to one shard of a job, by a rule other tools can reproduce.

    shard = Shard.parse("auto/8", os.environ)   # K from a Kubernetes or Slurm array index
    if shard.contains(row_id): ...

An id's shard is the first 8 bytes of its SHA-1, read as a big-endian integer, modulo
the shard count (SPEC "Beyond one machine"). It depends on the id alone, never on the row's
position or the input's order, so shards stay disjoint as the input grows and any process
can tell which shard owns an id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import JobError

# Kubernetes Indexed Jobs set this to the pod's completion index, 0 .. completions-1.
K8S_INDEX = "JOB_COMPLETION_INDEX"
# Slurm arrays number tasks from the array's first index (``--array=1-8`` starts at 1).
SLURM_INDEX = "SLURM_ARRAY_TASK_ID"
SLURM_MIN = "SLURM_ARRAY_TASK_MIN"


def shard_of(row_id: str, count: int) -> int:
    """The shard (0 .. count-1) that owns ``row_id``."""
    digest = hashlib.sha1(row_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``: the rows whose id hashes to ``index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise JobError(f"--shard: the shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise JobError(
                f"--shard: the shard index must be between 0 and {self.count - 1}, "
                f"not {self.index} (shards are numbered from 0)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """The shard in file names: ``3of8``."""
        return f"{self.index}of{self.count}"

    def contains(self, row_id: str) -> bool:
        """Whether ``row_id`` is this shard's work."""
        return shard_of(row_id, self.count) == self.index

    @classmethod
    def parse(cls, spec: str, environ: Mapping[str, str]) -> Shard:
        """``"K/N"``, or ``"auto/N"`` with K from the Kubernetes or Slurm array index."""
        index_text, slash, count_text = spec.strip().partition("/")
        if not slash:
            raise JobError(f"--shard: expected K/N or auto/N (e.g. 3/8), not {spec!r}")
        count = _integer(count_text, "the shard count N", spec)
        if index_text.strip() == "auto":
            return cls(_auto_index(environ, count), count)
        return cls(_integer(index_text, "the shard index K", spec), count)


def _integer(text: str, what: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise JobError(
            f"--shard: {what} must be a whole number in K/N or auto/N, not {text!r} in {spec!r}"
        ) from None


def _auto_index(environ: Mapping[str, str], count: int) -> int:
    spec = f"auto/{count}"
    if K8S_INDEX in environ:
        index = _integer(environ[K8S_INDEX], f"${K8S_INDEX}", spec)
        source, fix = f"${K8S_INDEX}={index}", f"set completions: {count} in the Job"
    elif SLURM_INDEX in environ:
        task = _integer(environ[SLURM_INDEX], f"${SLURM_INDEX}", spec)
        first = _integer(environ.get(SLURM_MIN, "0"), f"${SLURM_MIN}", spec)
        index = task - first
        source = f"Slurm array task {task} (the array starts at {first})"
        fix = f"submit the array as --array=0-{count - 1}"
    else:
        raise JobError(
            f"--shard {spec}: neither ${K8S_INDEX} (a Kubernetes Indexed Job) nor "
            f"${SLURM_INDEX} (a Slurm array task) is set; give the shard as K/{count}"
        )
    if not 0 <= index < count:
        raise JobError(f"--shard {spec}: {source} is not one of {count} shards; {fix}")
    return index
