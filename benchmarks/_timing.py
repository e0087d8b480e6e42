"""Timing shared by the benchmarks: the median of several runs of one call."""

from __future__ import annotations

import statistics
import time


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
