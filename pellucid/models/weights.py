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
