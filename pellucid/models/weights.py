"""Reading weight files: tensors only (``weights_only=True`` or safetensors), and every failure a
:class:`PellucidError` that names the file and the model it was meant for."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from .._checks import PellucidError


def weights_file(weights, name: str) -> Path:
    """``weights`` as a path: a ``str`` or ``os.PathLike`` of an existing file, else a clear error."""
    if isinstance(weights, bool) or not isinstance(weights, str | os.PathLike):
        raise PellucidError(f"weights for {name} must be a file path (a .pth state_dict or .safetensors) or "
                            f"'random', got {type(weights).__name__} {weights!r}")
    path = Path(weights)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise PellucidError(f"weights file {str(path)!r} for {name} {what}: give a .pth state_dict or a "
                            ".safetensors file")
    return path


def read_checkpoint(path: Path, name: str = "the model") -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a weights file: a plain state_dict, or ``{"state_dict": ..., "meta": {...}}``."""
    path = weights_file(path, name)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as e:
        raise PellucidError("reading .safetensors needs the safetensors package: pip install safetensors") from e
    except pickle.UnpicklingError:  # weights_only refused an object: the file would run code when loaded
        raise PellucidError(f"refusing to load {str(path)!r}: it holds pickled Python objects, and loading them "
                            "could run code. pellucid reads only tensors: save a state_dict "
                            "(torch.save(model.state_dict(), path)) or a .safetensors file") from None
    except Exception as e:
        raise PellucidError(f"cannot read weights {str(path)!r} for {name} ({type(e).__name__}): a .pth "
                            "state_dict or a .safetensors file is accepted") from None
    meta = {}
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        meta = state.get("meta") if isinstance(state.get("meta"), dict) else {}
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = type(state).__name__ if not isinstance(state, dict) else "dict whose values are not all tensors"
        raise PellucidError(f"weights {str(path)!r} hold a {held}, not a state_dict of {name} "
                            "(torch.save(model.state_dict(), path))")
    return state, meta


def read_state_dict(path, name: str = "the model") -> dict:
    return read_checkpoint(path, name)[0]


def load_into(net: nn.Module, state: dict, name: str, path) -> None:
    """``net.load_state_dict(state)``, with any mismatch said in one line naming the file and the model."""
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        detail = [line.strip() for line in str(e).splitlines()[1:3] if line.strip()]  # the first mismatches
        raise PellucidError(f"weights {str(path)!r} do not fit {name}: {'; '.join(detail) or e}") from e


def head_classes(net: nn.Module, state: dict) -> int | None:
    """The number of classes of ``state``'s classifier when it differs from ``net``'s (a fine-tuned head): the
    last 2-D weight of ``net`` whose rows are its output classes, read in ``state``."""
    out = getattr(net, "num_classes", 1000)
    heads = [k for k, v in net.state_dict().items() if k.endswith("weight") and v.dim() >= 2 and v.shape[0] == out]
    if heads and heads[-1] in state and state[heads[-1]].dim() >= 1 and state[heads[-1]].shape[0] != out:
        return int(state[heads[-1]].shape[0])
    return None


def build_with_weights(build, name: str, weights, path=None) -> tuple[nn.Module, dict, int | None]:
    """``(net, meta, classes)``: ``build()`` with the weights of ``path`` (``weights="random"``: as built).

    ``build(**kw)`` makes the architecture (``build(num_classes=k)`` when the file holds a head of ``k``
    classes, which ``classes`` then is); ``meta`` is the checkpoint's (mean, std, input_size, labels)."""
    net = build()
    if weights == "random":
        return net, {}, None
    state, meta = read_checkpoint(path, name)
    classes = head_classes(net, state)
    if classes is not None:  # a fine-tuned head: the same architecture with `classes` outputs
        net = build(num_classes=classes)
    load_into(net, state, name, path)
    return net, meta, classes
