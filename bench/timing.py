"""Bounds and summaries for measurement loops: every loop stops at a count or a wall-clock
limit, whichever comes first, and latencies are summarised as percentiles."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """At most `count` iterations and `seconds` of wall time."""

    count: int
    seconds: float

    def start(self) -> BudgetClock:
        return BudgetClock(self, time.monotonic() + self.seconds)


@dataclass
class BudgetClock:
    budget: Budget
    deadline: float
    used: int = 0

    def take(self) -> bool:
        """Claim one iteration; False once the count or the time is spent."""
        if self.used >= self.budget.count or time.monotonic() >= self.deadline:
            return False
        self.used += 1
        return True


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds; `errors` counts answers with an unexpected status (not in the
    percentiles)."""

    samples: int
    errors: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    statuses: dict[str, int]

    @classmethod
    def of(cls, seconds: list[float], errors: int, statuses: dict[str, int]) -> LatencySummary:
        ordered = sorted(seconds)
        return cls(
            samples=len(ordered),
            errors=errors,
            p50_ms=percentile(ordered, 0.50) * 1000,
            p95_ms=percentile(ordered, 0.95) * 1000,
            max_ms=(ordered[-1] * 1000) if ordered else math.nan,
            statuses=statuses,
        )


def measure_latency(
    request: Callable[[int], int], budget: Budget, expected: int = 200
) -> LatencySummary:
    """Call `request(i)` (which returns an HTTP status) until the budget is spent."""
    clock = budget.start()
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    index = 0
    while clock.take():
        started = time.perf_counter()
        status = request(index)
        elapsed = time.perf_counter() - started
        index += 1
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == expected:
            seconds.append(elapsed)
        else:
            errors += 1
    return LatencySummary.of(seconds, errors, statuses)
