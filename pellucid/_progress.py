"""The one progress bar: tqdm on stderr, shown only for runs longer than half a second.

``progress`` is ``True`` (show), ``False`` (hide) or ``None`` (show when stderr is a terminal).
Every long-running function takes ``progress=`` and calls :func:`bar`.
"""

from __future__ import annotations

import sys


def bar(total: int | None = None, desc: str = "", progress: bool | None = True, unit: str = "it",
        iterable=None, leave: bool = False):
    """A tqdm bar with pellucid's defaults (stderr, 0.5 s delay, not left behind)."""
    from tqdm import tqdm

    disable = None if progress is None else not progress
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, leave=leave,
                delay=0.5, dynamic_ncols=True)
