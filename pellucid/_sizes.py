"""What an image is fitted to: a model, a model's name, an explicit ``(C, H, W)``, and the ``size=`` and
``channels=`` arguments of :func:`pellucid.io.load_image`, each checked with one clear message."""

from __future__ import annotations

from numbers import Integral

import torch

from ._checks import PellucidError

CHANNELS = (1, 3)  # what ``channels=`` accepts: grey or RGB


def short(value, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters for a message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def fit_args(model, size, channels) -> tuple[int, tuple[int, int] | None]:
    """The channels and size a model (or an explicit ``(C, H, W)``, or a model's name) takes; explicit
    arguments win. Anything else is refused with what is accepted."""
    input_size = model_input_size(model)
    if channels is None and input_size:
        channels = input_size[0]
        if channels not in CHANNELS:
            raise PellucidError(f"the model takes {channels} channels (input_size {tuple(input_size)}) but images are "
                                "read as grey (1) or RGB (3); load with channels=1 or 3 and convert")
    elif channels is None:
        channels = 3
    elif isinstance(channels, bool) or not isinstance(channels, Integral) or channels not in CHANNELS:
        raise PellucidError(f"channels must be 1 (grey) or 3 (RGB), got {short(channels)}")
    if size is None and input_size and len(input_size) == 3:
        size = tuple(input_size[1:])
    return int(channels), (check_size(size) if size is not None else None)


def positive_ints(value, n: int | None = None) -> tuple[int, ...] | None:
    """``value`` as a tuple of ints >= 1 (``n`` of them, if given), or ``None`` if it is not one."""
    try:
        items = tuple(value)
    except TypeError:
        return None
    if (n is not None and len(items) != n) or not items or \
            not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in items):
        return None
    return tuple(int(v) for v in items)


def check_size(size) -> tuple[int, int]:
    """``(H, W)`` of positive ints; one int ``n`` is the square ``(n, n)``."""
    if isinstance(size, Integral) and not isinstance(size, bool) and size >= 1:
        return int(size), int(size)
    checked = None if isinstance(size, (str, bytes)) else positive_ints(size, 2)
    if checked is None:
        raise PellucidError(f"size must be (height, width) in pixels, two ints >= 1 (or one int for a square), "
                            f"got {short(size)}")
    return checked


def model_input_size(model) -> tuple | None:
    """The ``(C, H, W)`` of a model, an explicit ``(C, H, W)`` or a model's name; ``None`` for a module
    without ``input_size`` (the image keeps its size and gets 3 channels)."""
    if model is None:
        return None
    if isinstance(model, str):
        return named_input_size(model)
    if isinstance(model, (tuple, list)):
        checked = positive_ints(model, 3)
        if checked is None or checked[0] not in CHANNELS:
            hint = "; for an output size give size=(H, W)" if len(model) == 2 else ""
            raise PellucidError(f"an input size must be (C, H, W) with C = 1 or 3 and H, W >= 1, "
                                f"got {short(model)}{hint}")
        return checked
    if isinstance(model, torch.nn.Module) or hasattr(model, "input_size"):
        return getattr(model, "input_size", None)
    raise PellucidError(f"model must be a model (torch.nn.Module), a model's name such as 'digits', or an input "
                        f"size (C, H, W), got {type(model).__name__} {short(model)}")


def named_input_size(name: str) -> tuple[int, ...] | None:
    """The ``(C, H, W)`` of the model ``pl.load_model(name)`` returns, from its record (nothing is built and
    no weights file is read). Unknown names raise the records' error, which lists the known ones."""
    from .registry import model_record

    record = model_record(name)
    if record.kind == "text":
        raise PellucidError(f"{name!r} is a text model, it reads words, not images; give an image model such as "
                            "'digits' or 'imagenet'")
    return tuple(record.input_size) if record.input_size else None
