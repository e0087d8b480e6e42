"""Timing shared by the benchmarks: the median of several runs of one call, or of several calls interleaved.

This machine's speed drifts by 20-30% over seconds, so a ratio of two medians taken one after the other
is noisy. :func:`interleaved` runs the contenders in turn, round after round, so drift hits them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn, repeats: int, warmup: bool = False) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn`` (after one untimed call if ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: bool = True) -> dict[str, float]:
    """Median wall time in seconds of each of ``fns``, timed in turn for ``rounds`` rounds (after one warm-up)."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
