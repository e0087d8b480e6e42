"""The one state manager: eval mode, frozen parameters, hooks and module attributes, all undone on exit.

Every public function runs the model inside :func:`model_state`. On exit, also when the body
raises, each module's ``training`` flag, each parameter's ``requires_grad`` and ``.grad`` are
restored, every hook registered through the context is removed and every attribute it set is put back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn


class ModelState:
    """Handle yielded by :func:`model_state`; registers hooks that are removed on exit."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list = []
        self._attrs: list = []  # (module, name, old value), restored in reverse order

    def forward_hook(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def forward_pre_hook(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_pre_hook(fn))

    def capture(self, module: nn.Module) -> dict:
        """Record ``module``'s output of every forward under key ``"output"``."""
        store: dict = {}

        def hook(_m, _inputs, output):
            store["output"] = output

        self.forward_hook(module, hook)
        return store

    def set_attr(self, module: nn.Module, name: str, value) -> None:
        """Set ``module.name`` to ``value`` until the context exits (e.g. a max-pool's ``return_indices``)."""
        own = name in vars(module)  # an attribute read from the class is deleted again, not copied in
        self._attrs.append((module, name, getattr(module, name), own))
        setattr(module, name, value)

    def remove_hooks(self) -> None:
        """Remove the hooks (attributes set with :meth:`set_attr` stay set until :meth:`restore_attrs`)."""
        while self._handles:
            self._handles.pop().remove()

    def restore_attrs(self) -> None:
        while self._attrs:
            module, name, old, own = self._attrs.pop()
            if own:
                setattr(module, name, old)
            else:
                delattr(module, name)


@contextmanager
def model_state(model: nn.Module, train: bool = False, freeze: bool = True,
                private: bool = False) -> Iterator[ModelState]:
    """Put ``model`` in eval mode (or train mode) with frozen parameters; restore everything on exit.

    Freezing the parameters means autograd computes input gradients only, which is both faster and
    guarantees that no parameter gradient is produced. ``private``: ``model`` is a copy of pellucid's own,
    made in eval mode with frozen parameters and used only so (LRP's canonical copy): only the hooks and
    attributes set through the state are undone (a walk over every module and parameter saved per call).
    """
    if private and (train or not freeze):
        raise ValueError("model_state(private=True) keeps the copy as it was made: eval mode, frozen")
    modes = [] if private else [(m, m.training) for m in model.modules()]
    params = [] if private else list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    state = ModelState(model)
    try:
        if not private:
            model.train(train)
        if freeze:
            for p in params:
                p.requires_grad_(False)
        yield state
    finally:
        state.remove_hooks()
        state.restore_attrs()
        for m, mode in modes:
            m.training = mode
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad


def hook_count(model: nn.Module) -> int:
    """How many hooks are registered on ``model``'s modules (used by tests to find leftovers)."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(m, attr, None)
            if d:
                total += len(d)
    return total

