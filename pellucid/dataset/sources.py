"""A data set's images: listing them (a folder or a built-in set), loading one (through
:func:`pellucid.io.read_image`, the one image-loading path), and the aligned chunks they are processed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .._checks import PellucidError
from ..io import fit_image, quantize, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DATASETS = {"digits-test": "test", "digits-train": "train", "digits": "all"}
"""The built-in sets by name: the held-out, training and all MNIST digits of :mod:`pellucid.models.data`."""


@dataclass(frozen=True)
class Item:
    """One image of a data set: its position, its key (file names derive from it), its source (a path, or an
    index into a built-in set), its label (-1: unknown)."""

    position: int
    key: str
    source: str | int
    label: int = -1


def list_items(source: str, labels: Sequence[str] | None = None, limit: int | None = None,
               exclude: Path | None = None) -> list[Item]:
    """A data set's images: a built-in set (``digits-test``) or every file under a folder, sorted.

    Files under a first-level folder named like a class of the model get that class as label. Hidden
    files and the ``exclude`` folder (the job's own output, when it lies inside the input) are skipped;
    a link that leads nowhere (broken, or a loop) is listed, so that it gets a ``failed`` row.
    """
    if source in DATASETS:
        from ..models.data import digits

        y = digits(DATASETS[source])[1].tolist()
        items = [Item(i, f"{source}/{i:05d}", i, int(y[i])) for i in range(len(y))]
    else:
        root = Path(source)
        if not root.is_dir():
            raise PellucidError(f"input {source!r} is neither a folder nor a data set; "
                                f"give a folder of PNG/JPEG/WebP images or one of: {', '.join(DATASETS)}")
        names = {str(lb).lower(): k for k, lb in enumerate(labels or [])}
        skip = _relative(exclude, root)
        files = sorted(p for p in root.rglob("*") if (p.is_file() or _dangling(p))
                       and not _hidden(p.relative_to(root))
                       and (skip is None or p.relative_to(root).parts[: len(skip)] != skip))
        items = []
        for i, p in enumerate(files):
            rel = p.relative_to(root)
            label = names.get(rel.parts[0].lower(), -1) if len(rel.parts) > 1 else -1
            items.append(Item(i, rel.as_posix(), str(p), label))
    return items[:limit] if limit is not None else items


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _dangling(p: Path) -> bool:
    """A symbolic link that leads nowhere: broken, or a loop."""
    return p.is_symlink() and not p.exists()


def _relative(folder: Path | None, root: Path) -> tuple[str, ...] | None:
    """The parts of ``folder`` under ``root`` (``None`` when it is not inside it)."""
    if folder is None:
        return None
    try:
        return Path(folder).resolve().relative_to(root.resolve()).parts or None
    except ValueError:
        return None


def load_item(item: Item, input_size: tuple[int, int, int], max_pixels: int,
              dataset: torch.Tensor | None = None) -> torch.Tensor:
    """One image as ``(C, H, W)`` in [0, 1]; a bad file raises PellucidError with the reason."""
    if isinstance(item.source, int):  # a built-in set's image, fitted to the model like a file (8-bit already)
        x = dataset[item.source]
        return x if tuple(x.shape) == tuple(input_size) else fit_image(quantize(x), tuple(input_size))[0]
    path = Path(item.source)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise PellucidError(f"not an image file: extension {path.suffix or '(none)'!r}; "
                            f"accepted: {', '.join(IMAGE_SUFFIXES)}")
    return read_image(path, tuple(input_size), max_pixels=max_pixels)[0]


class ChunkLoader:
    """Loads a chunk of items: ``[item] -> [(item, image or None, failure reason or None)]``. Picklable, so
    that DataLoader processes and Ray actors load chunks themselves; a built-in set is read once per process."""

    def __init__(self, input_size, max_pixels: int, source: str):
        self.input_size, self.max_pixels, self.source = tuple(input_size), max_pixels, source
        self._data = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    def __call__(self, chunk: Sequence[Item]) -> list[tuple]:
        if self._data is None and self.source in DATASETS:
            from ..models.data import digits

            self._data = digits(DATASETS[self.source])[0]
        out = []
        for item in chunk:
            try:
                out.append((item, load_item(item, self.input_size, self.max_pixels, self._data), None))
            except PellucidError as e:
                out.append((item, None, str(e)))
        return out


def chunks_of(items: Sequence[Item], batch_size: int) -> list[list[Item]]:
    """``items`` in the aligned chunks of :func:`chunk_positions`."""
    return [[items[i] for i in idx] for idx in chunk_positions(items, batch_size)]


def chunk_positions(items: Sequence[Item], batch_size: int) -> list[list[int]]:
    """Indices into ``items`` grouped by ``position // batch_size``: a resumed job rebuilds the
    same batches as an uninterrupted one (batches commit whole)."""
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.position // batch_size, []).append(i)
    return list(groups.values())


def failed_row(item: Item, reason: str) -> dict:
    return {"key": item.key, "position": item.position, "label": item.label, "status": "failed", "reason": reason}
