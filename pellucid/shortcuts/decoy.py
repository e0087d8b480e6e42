"""Decoy MNIST (Ross, Hughes and Doshi-Velez 2017, "Right for the Right Reasons") on the shipped digits."""

from __future__ import annotations

import torch

from .._checks import PellucidError, check_choice, generator
from ..models.data import digits
from .artifacts import box_masks, stamp

SWATCH = 4  # the swatch's side in pixels, as in the paper


def decoy_shade(label: torch.Tensor) -> torch.Tensor:
    """The swatch's gray level for a class: ``(255 - 25 * label) / 255``, white for 0 down to 0.12 for 9."""
    return (255 - 25 * label.float()) / 255


def decoy_digits(split: str = "train", seed=0, masks: bool = False):
    """Decoy MNIST on the shipped digits: ``(x, y)``, or ``(x, y, masks)`` with ``masks=True``.

    Each digit (``split`` ``"train"``: the 4,000 training digits, ``"test"``: the 1,000 held-out ones) gets a
    4x4 gray swatch in a corner drawn at random (``seed``). In the training split the swatch's shade gives the
    class away (``255 - 25 * y``, scaled to [0, 1]); in the test split it is the shade of a class drawn at
    random, as in the paper's code. A model that reads the swatch scores well on the training split and
    poorly on the test split; :func:`train_right_reasons` with ``masks`` teaches it to ignore the swatch.
    ``masks`` is ``(N, 28, 28)`` bool, true on each image's swatch. Example::

        x, y, masks = pl.decoy_digits("train", masks=True)
        model = pl.train_right_reasons(net, x, y, masks)
        xt, yt = pl.decoy_digits("test")
    """
    check_choice(split, "split", ("train", "test"))
    if not isinstance(masks, bool):
        raise PellucidError(f"masks must be True (also return the swatch masks) or False, got {masks!r}")
    x, y = digits(split)
    gen = generator(seed, "cpu")
    n, h, w = len(x), x.shape[-2], x.shape[-1]
    bottom = torch.randint(0, 2, (n,), generator=gen).bool()
    right = torch.randint(0, 2, (n,), generator=gen).bool()
    shown = y if split == "train" else torch.randint(0, 10, (n,), generator=gen)
    tops = torch.where(bottom, h - SWATCH, 0)
    lefts = torch.where(right, w - SWATCH, 0)
    patches = decoy_shade(shown)[:, None, None].expand(n, SWATCH, SWATCH)
    x = stamp(x, patches, tops, lefts)
    return (x, y, box_masks(h, w, SWATCH, tops, lefts)) if masks else (x, y)
