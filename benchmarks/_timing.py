"""Timing shared by the benchmarks: the median of several runs of one call, or of several calls interleaved.

This machine's speed drifts by 20-30% over seconds, so a ratio of two medians taken one after the other
is noisy. :func:`interleaved` runs the contenders in turn, round after round, so drift hits them alike,
and pauses between two contenders (:data:`SETTLE` seconds) so that one contender's aftermath (BLAS or
OpenMP threads still spinning, memory being freed) does not slow the next: occlusion of 64 digits measured
1.09x Captum right after four batch-size sweeps and 0.86x with the two alone and a pause between them.
Compare two contenders in rounds of their own; sweeps go in rounds of their own too.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

SETTLE = 0.5
"""Seconds of rest before each timed call: spinning worker threads go to sleep, freed memory is returned."""


def settle(pause: float = SETTLE) -> None:
    """Let the previous contender's threads and memory settle before the next one is timed."""
    gc.collect()
    time.sleep(pause)


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


def interleaved_runs(fns: dict[str, Callable[[], object]], rounds: int, warmup: bool = True,
                     pause: float = SETTLE) -> dict[str, list[float]]:
    """Wall times in seconds of each of ``fns``, timed in turn for ``rounds`` rounds (after one warm-up).

    The order rotates from round to round, so that no contender always runs first or after the same one,
    and each call starts after :func:`settle` (``pause`` seconds; 0 for none).
    """
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # each contender takes each place in turn
            if pause:
                settle(pause)
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: bool = True,
                pause: float = SETTLE) -> dict[str, float]:
    """Median wall time in seconds of each of ``fns``, timed in turn for ``rounds`` rounds (after one warm-up)."""
    return {name: statistics.median(t) for name, t in interleaved_runs(fns, rounds, warmup, pause).items()}


def ratio_quartiles(times: dict[str, list[float]], base: str) -> dict[str, tuple[float, float, float]]:
    """Quartiles (25%, median, 75%) over rounds of each contender's time over ``base``'s in the same round.

    Pairing within a round cancels drift slower than a round, which the ratio of two medians does not.
    """
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, times[base])]
        out[name] = tuple(statistics.quantiles(ratios, n=4)) if len(ratios) > 1 else (ratios[0],) * 3
    return out


def report(title: str, times: dict[str, list[float]], base: str) -> None:
    """Print a markdown table of each contender's median seconds and its per-round ratio to ``base``."""
    q = ratio_quartiles(times, base)
    print(f"\n{title}")
    print(f"| contender | median s | ratio to {base} (quartiles over rounds) |")
    print("|---|---|---|")
    for name, t in times.items():
        lo, mid, hi = q[name]
        print(f"| {name} | {statistics.median(t):.3f} | {mid:.2f}x ({lo:.2f}-{hi:.2f}) |")


def raw_passes(model, xs, classes, bs: int, gradients: bool = True, repeat: int = 1) -> None:
    """The limit every benchmark compares with: ``repeat`` times, every row of ``xs`` through the model
    once in chunks of ``bs``, in plain PyTorch (no pellucid code): a forward pass, or with ``gradients``
    the input gradient of the ``classes`` logits. Parameters are frozen meanwhile and restored after.
    """
    import torch

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        for _ in range(repeat):
            for s in range(0, len(xs), bs):
                if gradients:
                    xi = xs[s:s + bs].detach().requires_grad_(True)
                    torch.autograd.grad(model(xi).gather(1, classes[s:s + bs, None]).sum(), xi)
                else:
                    with torch.no_grad():
                        model(xs[s:s + bs])
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def markdown(rows: list[dict], keys) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
