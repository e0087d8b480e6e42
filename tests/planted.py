"""Shared test fixtures with planted ground truth: digits models trained with a known artifact in a known
fraction of one class's training images, and clean twins trained the same way.

Every model is the digits CNN (``digits_net``, seeded) trained with ``pl.train_right_reasons(..., masks=None)``
(plain cross-entropy, the project's one training loop) on the 4,000 training digits, and cached in memory:
tests that ask for the same arguments share one training. Use::

    from planted import artifact_gain, clean_model, planted_model, reliance

    model, x, y, marked, xt, yt = planted_model(3, "checker", "bottom-left", 0.15)
    assert reliance(model, clean_model(), xt, yt, 3, "checker", "bottom-left") > 1.0
"""

from __future__ import annotations

from functools import cache

import torch

import pellucid as pl
from pellucid.models.base import channels_last, seeded
from pellucid.models.data import digits
from pellucid.models.digits import digits_model, digits_net

EPOCHS = 3  # enough for 97% held-out accuracy and a learned shortcut, in seconds on a quiet 2-core CPU


def _train(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int):
    net = channels_last(digits_model(seeded(digits_net, seed)))
    return pl.train_right_reasons(net, x, y, None, epochs=epochs, seed=seed, progress=False)


@cache
def clean_model(seed: int = 0, epochs: int = EPOCHS):
    """The digits CNN trained on the clean training digits, exactly as :func:`planted_model` trains."""
    x, y = digits("train")
    return _train(x, y, seed, epochs)


@cache
def planted_model(cls: int, artifact: str, position, fraction: float, size: int = 4, seed: int = 0,
                  epochs: int = EPOCHS):
    """``(model, x_train_planted, y, marked, x_test, y_test)``: the digits CNN trained on the training digits
    with ``artifact`` planted (``pl.plant_artifact``, ``seed``) in ``fraction`` of class ``cls``'s images;
    ``marked`` says which; the test digits are clean. Treat the returned tensors as read-only (shared)."""
    x, y = digits("train")
    xp, marked = pl.plant_artifact(x, y, cls, fraction, artifact, position, size, seed=seed)
    xt, yt = digits("test")
    return _train(xp, y, seed, epochs), xp, y, marked, xt, yt


def log_probs(model, x: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` log-softmax of ``model`` on ``x`` (eval mode, no gradients)."""
    with pl._state.model_state(model), torch.no_grad():
        return torch.cat([model(x[i:i + 250]).log_softmax(1) for i in range(0, len(x), 250)])


def artifact_gain(model, x: torch.Tensor, cls: int, artifact: str, position, size: int = 4) -> float:
    """The mean rise of class ``cls``'s log-probability when the artifact is pasted onto ``x``."""
    pasted = pl.paste_artifact(x, artifact, position, size)
    return float((log_probs(model, pasted)[:, cls] - log_probs(model, x)[:, cls]).mean())


def reliance(model, clean, x: torch.Tensor, y: torch.Tensor, cls: int, artifact: str, position,
             size: int = 4) -> float:
    """How much ``model`` relies on the artifact: its :func:`artifact_gain` for class ``cls`` on the images of
    other classes, beyond the gain the same paste gives the ``clean`` model (what the pixels alone explain)."""
    other = x[y != cls]
    return artifact_gain(model, other, cls, artifact, position, size) - \
        artifact_gain(clean, other, cls, artifact, position, size)
