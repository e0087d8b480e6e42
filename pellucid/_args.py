"""The common arguments of every method: the model, the images, the target and the batch size."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import PellucidError, check_images
from ._grad import resolve_batch_size
from .targets import Target, as_target


def num_classes(model: nn.Module) -> int | None:
    return getattr(model, "num_classes", None)


def check_call(model: nn.Module, x: torch.Tensor, batch_size: int | None) -> tuple[torch.Tensor, int]:
    """Validate the model, the images and the batch size of a method."""
    if not isinstance(model, nn.Module):
        raise PellucidError(
            f"model must be a torch.nn.Module (see pl.load_model / pl.wrap), got {type(model).__name__}"
        )
    weight = next(model.parameters(), None)
    if weight is not None and weight.device.type == "meta":
        raise PellucidError("the model's parameters are on the meta device (shapes without values): load its "
                            "weights first (e.g. model.to_empty(device='cpu') then load_state_dict)")
    x = check_images(x, model)
    return x, resolve_batch_size(batch_size, x, model)


def prepare(model: nn.Module, x: torch.Tensor, target, batch_size: int | None, score: str = "logit",
            target_name: str = "target") -> tuple[torch.Tensor, Target, int]:
    """Validate the common arguments of a method: images, target and batch size (a target that reads a
    prediction, such as a segmentation mask of ``None``, is fixed on ``x`` here)."""
    x, bs = check_call(model, x, batch_size)
    return x, as_target(target, len(x), num_classes(model), score, target_name).bind(model, x), bs
