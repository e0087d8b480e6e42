"""The one progress bar: tqdm on stderr, shown only for runs longer than half a second.

``progress`` is ``True`` (show), ``False`` (hide) or ``None`` (show when stderr is a terminal).
Every long-running function takes ``progress=`` and calls :func:`bar`. A bar ends its line with ``\r``,
not a newline: whoever writes a message to stderr after one calls :func:`end_line` first.
"""

from __future__ import annotations

import sys

_drawn = False  # a bar has drawn on stderr since the last end_line()
_Bar = None


def _bar_class():
    """tqdm, noting when a bar draws (the class is made once, on first use: tqdm loads only then)."""
    global _Bar
    if _Bar is None:
        from tqdm import tqdm

        class Bar(tqdm):
            def display(self, *args, **kwargs):
                global _drawn
                _drawn = True
                return super().display(*args, **kwargs)

            def close(self):
                global _drawn
                drawn, shown = _drawn, not self.disable and self.last_print_t >= self.start_t + self.delay
                super().close()  # a bar tqdm displayed is cleared (or ended with a newline) here
                _drawn = drawn and not shown

        _Bar = Bar
    return _Bar


def bar(total: int | None = None, desc: str = "", progress: bool | None = True, unit: str = "it",
        iterable=None, leave: bool = False):
    """A tqdm bar with pellucid's defaults (stderr, 0.5 s delay, not left behind)."""
    disable = None if progress is None else not progress
    return _bar_class()(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, leave=leave,
                        delay=0.5, dynamic_ncols=True)


def end_line() -> None:
    """Start a new line on stderr if a bar has drawn there since the last call: a message printed next
    must not land on the bar's line."""
    global _drawn
    if _drawn:
        _drawn = False
        sys.stderr.write("\n")
        sys.stderr.flush()
