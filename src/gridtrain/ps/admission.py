"""Who may start a handshake: the parameter server's budget of unauthenticated connections.

Layer: ps, pure bookkeeping: no sockets, no threads, no clock. ``server.py`` asks ``admit`` in its
accept loop, before it spends a thread on a connection, and ``release``s the slot when the
connection authenticates or ends.

A peer that has not proved the secret holds a *pre-authentication slot*. Those slots are few
(``StartupBudget``, OpenSSH's ``MaxStartups start:rate:full``), capped per source address
(OpenSSH's ``PerSourceMaxStartups``), and separate from the authenticated connections that
``max_connections`` bounds, so strangers that stall in the handshake compete only with each other
and with workers that are between ``connect`` and AUTH (a few milliseconds), never with workers
that have authenticated. From ``start`` pending handshakes on, a new one is refused with a
probability that rises linearly from ``rate`` to 1 at ``full`` (random early drop): a flood is shed
before the budget is exhausted, while a worker that retries still gets through.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from gridtrain.errors import ConfigError

# Reasons a connection is refused before its handshake starts (keys of ParameterServer.dropped).
FULL = "PreauthBudgetFull"
EARLY_DROP = "PreauthEarlyDrop"
PER_SOURCE = "PreauthPerSource"

_MAX_SOURCES_COUNTED = 1024  # distinct sources kept in the refusal counts; the rest are "other"


@dataclass(frozen=True)
class StartupBudget:
    """OpenSSH's ``MaxStartups start:rate:full`` for the parameter server's handshakes.

    Below ``start`` pending handshakes every connection is admitted; from ``start`` on a new one is
    refused with probability ``rate`` (0 to 1), rising linearly to 1 at ``full``, the hard limit.
    """

    start: int = 16
    rate: float = 0.3
    full: int = 32

    def __post_init__(self) -> None:
        if not (1 <= self.start <= self.full) or not (0.0 <= self.rate <= 1.0):
            raise ConfigError(
                f"max_startups {self.start}:{round(self.rate * 100)}:{self.full} is invalid; "
                "give START:RATE:FULL with 1 <= START <= FULL and RATE a percentage (e.g. "
                "16:30:32), or one number FULL"
            )

    @classmethod
    def parse(cls, text: str) -> StartupBudget:
        """``"16:30:32"`` (start, rate in percent, full) or ``"32"`` (no early drop)."""
        parts = text.split(":")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            return cls(numbers[0], 1.0, numbers[0])
        if len(numbers) != 3:
            raise ConfigError(
                f"--max-startups {text!r} is not START:RATE:FULL or FULL; use e.g. 16:30:32"
            )
        start, rate, full = numbers
        return cls(start, rate / 100, full)

    def __str__(self) -> str:
        return f"{self.start}:{round(self.rate * 100)}:{self.full}"

    def drop_probability(self, pending: int) -> float:
        """The chance that a new connection is refused while ``pending`` handshakes are open."""
        if pending >= self.full:
            return 1.0
        if pending < self.start:
            return 0.0
        return self.rate + (1.0 - self.rate) * (pending - self.start) / (self.full - self.start)


class Admission:
    """Pending handshakes, in total and per source; not thread-safe (the server holds a lock)."""

    def __init__(
        self, budget: StartupBudget, per_source: int, rng: random.Random | None = None
    ) -> None:
        self.budget = budget
        self.per_source = per_source
        self._rng = rng or random.Random()
        self._pending: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by reason
        self.refused_sources: Counter[str] = Counter()  # by source address

    @property
    def pending(self) -> int:
        return self._pending.total()

    def pending_from(self, source: str) -> int:
        return self._pending[source]

    def admit(self, source: str) -> str | None:
        """Take a slot for a new connection from ``source``; or return why it is refused."""
        reason = None
        if self._pending[source] >= self.per_source:
            reason = PER_SOURCE
        elif self.pending >= self.budget.full:
            reason = FULL
        elif self._rng.random() < self.budget.drop_probability(self.pending):
            reason = EARLY_DROP
        if reason is None:
            self._pending[source] += 1
            return None
        self.refused[reason] += 1
        counted = source
        if source not in self.refused_sources and len(self.refused_sources) >= _MAX_SOURCES_COUNTED:
            counted = "other"
        self.refused_sources[counted] += 1
        return reason

    def release(self, source: str) -> None:
        """Give back the slot of a connection that authenticated or ended."""
        if self._pending[source] <= 1:
            self._pending.pop(source, None)
        else:
            self._pending[source] -= 1

    def top_sources(self, count: int = 10) -> dict[str, int]:
        """The sources refused most often, for the status report."""
        return dict(self.refused_sources.most_common(count))
