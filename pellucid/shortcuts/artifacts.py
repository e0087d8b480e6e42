"""Planted ground truth: small artifacts pasted into images, in a known fraction of one class.

A model trained on images where a class often carries an artifact learns the artifact as a shortcut (a
"Clever Hans"). Planting it yourself gives the only oracle for whether a data-set method finds the
shortcut: you know which images carry it, where, and what it looks like.

Every artifact paints its whole ``size x size`` box in two tones, white (1) and black (0), so it is
visible on dark and on light backgrounds; multi-channel images get it on every channel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import PellucidError, check_images, check_number, generator
from ..targets import as_indices


def _checker(i: torch.Tensor, j: torch.Tensor, s: int) -> torch.Tensor:
    return (i + j) % 2 == 0


def _square(i: torch.Tensor, j: torch.Tensor, s: int) -> torch.Tensor:  # white inside a one-pixel black frame
    return (i > 0) & (i < s - 1) & (j > 0) & (j < s - 1)


def _plus(i: torch.Tensor, j: torch.Tensor, s: int) -> torch.Tensor:  # the middle row(s) and column(s)
    mid = {(s - 1) // 2, s // 2}
    return torch.isin(i, torch.tensor(sorted(mid))) | torch.isin(j, torch.tensor(sorted(mid)))


def _cross(i: torch.Tensor, j: torch.Tensor, s: int) -> torch.Tensor:  # both diagonals, an X
    return (i == j) | (i + j == s - 1)


def _stripes(i: torch.Tensor, j: torch.Tensor, s: int) -> torch.Tensor:  # one-pixel horizontal stripes
    return i % 2 == 0


ARTIFACTS: dict[str, Callable] = {"checker": _checker, "square": _square, "plus": _plus, "cross": _cross,
                                  "stripes": _stripes}
"""The artifacts by name: ``checker`` (a one-pixel checkerboard, white top-left), ``square`` (white, framed in
black), ``plus`` (the middle rows and columns white), ``cross`` (both diagonals white, an X) and ``stripes``
(white and black rows)."""
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
"""Where an artifact goes: flush with a corner, or centred; a ``(row, col)`` tuple gives its top-left pixel."""
MIN_SIZE = 3  # the smallest box in which every artifact shows both tones


def artifact_pattern(artifact: str = "checker", size: int = 4) -> torch.Tensor:
    """The artifact's ``(size, size)`` pattern of 0s and 1s (float), as :func:`paste_artifact` paints it."""
    if artifact not in ARTIFACTS:
        raise PellucidError(f"unknown artifact {artifact!r}; choose one of: {', '.join(ARTIFACTS)}")
    size = check_number(size, "size", MIN_SIZE, integer=True, hint=" (the artifact's side in pixels)")
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ARTIFACTS[artifact](i, j, size).float()


def corner(position, size: int, height: int, width: int) -> tuple[int, int]:
    """The ``(top, left)`` pixel of a ``size`` box at ``position`` in a ``height x width`` image."""
    if size > min(height, width):
        raise PellucidError(f"size {size} is larger than the {height}x{width} images: give a size from {MIN_SIZE} "
                            f"to {min(height, width)}")
    if isinstance(position, tuple | list) and len(position) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in position):
        top, left = position
        if not (0 <= top <= height - size and 0 <= left <= width - size):
            raise PellucidError(f"position {tuple(position)} puts the {size}x{size} artifact outside the "
                                f"{height}x{width} images: the top-left pixel must be within "
                                f"(0..{height - size}, 0..{width - size})")
        return top, left
    spots = {"top-left": (0, 0), "top-right": (0, width - size), "bottom-left": (height - size, 0),
             "bottom-right": (height - size, width - size), "center": ((height - size) // 2, (width - size) // 2)}
    if not isinstance(position, str) or position not in spots:
        raise PellucidError(f"unknown position {position!r}; choose one of: {', '.join(POSITIONS)}, or a (row, col) "
                            "tuple of ints for the artifact's top-left pixel")
    return spots[position]


def stamp(x: torch.Tensor, patch: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` with ``patch`` (``(s, s)``, or ``(N, s, s)``: one per image) painted on every channel with
    its top-left pixel at ``(tops[n], lefts[n])`` in image ``n``."""
    n, _, _, _ = x.shape
    s = patch.shape[-1]
    offset = torch.arange(s, device=x.device)
    rows = (tops.to(x.device)[:, None] + offset)[:, :, None].expand(n, s, s)
    cols = (lefts.to(x.device)[:, None] + offset)[:, None, :].expand(n, s, s)
    batch = torch.arange(n, device=x.device)[:, None, None].expand(n, s, s)
    out = x.clone()
    out[batch, :, rows, cols] = patch.to(x)[..., None].expand(n, s, s, x.shape[1])
    return out


def box_masks(height: int, width: int, size: int, tops: torch.Tensor, lefts: torch.Tensor,
              device=None) -> torch.Tensor:
    """``(len(tops), height, width)`` bool: true inside each image's ``size`` box at ``(tops[i], lefts[i])``."""
    r = torch.arange(height, device=device)[None, :, None]
    c = torch.arange(width, device=device)[None, None, :]
    t, l = tops.to(device)[:, None, None], lefts.to(device)[:, None, None]
    return (r >= t) & (r < t + size) & (c >= l) & (c < l + size)


def paste_artifact(x: torch.Tensor, artifact: str = "checker", position="bottom-left", size: int = 4) -> torch.Tensor:
    """A copy of every image in ``x`` with the artifact pasted in (the caller's tensor untouched).

    ``artifact`` is one of :data:`ARTIFACTS` (``checker``, ``square``, ``plus``, ``cross``, ``stripes``),
    ``position`` one of :data:`POSITIONS` or a ``(row, col)`` tuple for the artifact's top-left pixel, ``size``
    its side in pixels (>= 3). Pasting onto held-out images of other classes tests whether a model learned the
    artifact: its probability for the planted class rises. Example::

        x2 = pl.paste_artifact(x, "cross", "top-right", size=5)
    """
    x = check_images(x)
    patch = artifact_pattern(artifact, size)
    top, left = corner(position, patch.shape[0], x.shape[-2], x.shape[-1])
    n = len(x)
    return stamp(x, patch, torch.full((n,), top), torch.full((n,), left))


def artifact_mask(x: torch.Tensor, position="bottom-left", size: int = 4) -> torch.Tensor:
    """``(H, W)`` bool, true where :func:`paste_artifact` paints on images like ``x``: the ``masks`` argument of
    :func:`train_right_reasons` that forbids a model to look at a planted artifact."""
    x = check_images(x)
    size = check_number(size, "size", MIN_SIZE, integer=True, hint=" (the artifact's side in pixels)")
    top, left = corner(position, size, x.shape[-2], x.shape[-1])
    return box_masks(x.shape[-2], x.shape[-1], size, torch.tensor([top]), torch.tensor([left]), x.device)[0]


def plant_artifact(x: torch.Tensor, y, cls: int, fraction: float = 0.1, artifact: str = "checker",
                   position="bottom-left", size: int = 4, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste an artifact into a seeded ``fraction`` of class ``cls``'s images: ``(x_planted, marked)``.

    ``y`` holds one label per image; ``round(fraction * count)`` (at least one) of the images labelled ``cls``,
    drawn with ``seed``, get the artifact (see :func:`paste_artifact` for ``artifact``, ``position`` and
    ``size``). ``marked`` is a bool ``(N,)`` mask of which images got it; ``x`` itself is not changed. A model
    trained on ``x_planted`` learns the shortcut "artifact means ``cls``". Example::

        x_planted, marked = pl.plant_artifact(x, y, cls=3, fraction=0.15, artifact="checker")
    """
    x = check_images(x)
    labels = as_indices(y, len(x), "y", kind="label")
    cls = int(as_indices(cls, 1, "cls", kind="class")[0])
    fraction = check_number(fraction, "fraction", 0, 1, low_open=True,
                            hint=" (the share of class cls's images that get the artifact)")
    members = torch.nonzero(labels == cls).flatten()
    if not len(members):
        present = ", ".join(map(str, sorted(set(labels.tolist()))[:20]))
        raise PellucidError(f"cls {cls} is not among the labels in y; y holds: {present}")
    paste_artifact(x[:1], artifact, position, size)  # a bad artifact, position or size fails before any work
    count = max(1, round(fraction * len(members)))
    chosen = members[torch.randperm(len(members), generator=generator(seed, "cpu"))[:count]]
    marked = torch.zeros(len(x), dtype=torch.bool)
    marked[chosen] = True
    out = x.clone()
    idx = chosen.to(x.device)
    out[idx] = paste_artifact(x[idx], artifact, position, size)
    return out, marked.to(x.device)
