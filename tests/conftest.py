"""Shared fixtures: the trained digits model, sample batches, a random resnet18, and the
side-effect checker every public method is run through."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import pellucid as pl
from pellucid._state import hook_count

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def digits_model():
    return pl.load_model("digits")


@pytest.fixture(scope="session")
def digits_batch():
    return pl.sample_images("digits", n=10)


@pytest.fixture(scope="session")
def resnet_small():
    """A randomly initialised resnet18 with ImageNet normalization inside, at 64x64 to stay fast."""
    model = pl.load_model("resnet18", weights="random")
    model.input_size = (3, 64, 64)
    return model


@pytest.fixture(scope="session")
def photos_small():
    return pl.sample_images("photos", n=4, size=64)


class Boom(RuntimeError):
    pass


def snapshot(model: nn.Module, x: torch.Tensor):
    return {
        "x": x.detach().clone(),
        "x_requires_grad": x.requires_grad,
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "hooks": hook_count(model),
        "attrs": _plain_attrs(model),
    }


def _plain_attrs(model: nn.Module) -> list[dict]:
    """Each module's plain settings (``return_indices``, ``inplace``, ``eps``, ...): what a method may set
    for a while (through ``ModelState.set_attr``) and must put back."""
    plain = (bool, int, float, str, tuple, type(None))
    return [{k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, plain)}
            for m in model.modules()]


def assert_unchanged(model, x, before):
    assert torch.equal(x.detach(), before["x"]), "the caller's tensor was modified"
    assert x.requires_grad == before["x_requires_grad"], "the caller's requires_grad flag changed"
    assert x.grad is None, "a gradient was left on the caller's tensor"
    assert [m.training for m in model.modules()] == before["modes"], "model.training changed"
    assert [p.requires_grad for p in model.parameters()] == before["flags"], "requires_grad of parameters changed"
    assert all(p.grad is None for p in model.parameters()), "a parameter .grad was left"
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before["params"])), "parameters changed"
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), before["buffers"])), "buffers changed"
    assert hook_count(model) == before["hooks"], "a hook was left registered"
    assert _plain_attrs(model) == before["attrs"], "a module attribute was left changed"


def check_side_effects(call, model: nn.Module, x: torch.Tensor, explode_at: nn.Module | None = None):
    """Run ``call(model, x)`` with the model in train mode and ``x.requires_grad`` True, and again with
    a forward hook that raises mid-forward; the caller's objects must be as they were both times."""
    model.train()
    try:
        x = x.clone().requires_grad_(True)
        before = snapshot(model, x)
        call(model, x)
        assert_unchanged(model, x, before)

        victim = explode_at or [m for m in model.modules() if len(list(m.children())) == 0][1]

        def explode(*_):
            raise Boom("forward failed mid-way")

        before = snapshot(model, x)
        handle = victim.register_forward_hook(explode)
        try:
            with pytest.raises(Boom):
                call(model, x)
        finally:
            handle.remove()
        assert_unchanged(model, x, before)
    finally:
        model.eval()
