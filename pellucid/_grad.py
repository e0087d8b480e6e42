"""The one batched gradient primitive, its forward-only twin, and the chunking rule.

Methods that need many passes (IG steps, SmoothGrad samples, occlusion windows, LIME samples)
describe their rows with a function ``rows -> images`` and let these iterators build, run and hand
back one chunk of at most ``batch_size`` rows at a time, so memory is bounded by ``batch_size``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ._checks import PellucidError
from .targets import Target

RowMaker = Callable[[slice], torch.Tensor]


_SECOND_ORDER = {"lock": threading.Lock(), "users": 0, "saved": None}


@contextlib.contextmanager
def second_order() -> Iterator[None]:
    """Forward passes inside it can be differentiated twice (``create_graph=True``, then a gradient of that
    gradient): attention runs on PyTorch's math kernel, since the fused CPU kernels of
    ``scaled_dot_product_attention`` (which torchvision's and timm's transformers call) have no double backward.
    The kernel choice is process-wide: counted, so threads that overlap (the web page's jobs) restore it once,
    when the last leaves."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    state = _SECOND_ORDER
    with state["lock"]:
        if state["users"] == 0:
            state["saved"] = sdpa_kernel([SDPBackend.MATH])
            state["saved"].__enter__()
        state["users"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["users"] -= 1
            if state["users"] == 0:
                state["saved"].__exit__(None, None, None)
                state["saved"] = None


def default_batch_size(x: torch.Tensor, model: nn.Module | None = None) -> int:
    """Images per model call, from sweeps on 2-core CPUs (the sweeps in ``benchmarks/attribution.py`` and
    ``benchmarks/imagenet.py``).

    Small images run fastest in chunks of ~64 on a quiet machine (28²: 4% faster than 32, 128 no
    faster; under cache contention from other tenants, 16 can be 30% faster), 224² images near 8
    (resnet18). A model may say better with a ``cpu_batch_size`` attribute: the built-in ``imagenet``
    model (EfficientNet-Lite0, whose expanded activations outgrow the cache sooner) runs 224² fastest in
    chunks of 4, 1.3-1.4x faster than 8. A GPU takes bigger chunks.
    """
    pixels = x.shape[-1] * x.shape[-2]
    if x.device.type == "cpu":
        hint = getattr(model, "cpu_batch_size", None)
        if isinstance(hint, int) and not isinstance(hint, bool) and hint > 0:
            return hint
        return 64 if pixels <= 64 * 64 else 8
    return 256 if pixels <= 64 * 64 else 32


def resolve_batch_size(batch_size: int | None, x: torch.Tensor, model: nn.Module | None = None) -> int:
    if batch_size is None:
        return default_batch_size(x, model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PellucidError(f"batch_size must be a positive int or None (automatic), got {batch_size!r}")
    return batch_size


def chunks(total: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def _rows(source: torch.Tensor | RowMaker) -> RowMaker:
    """Rows of a tensor by slice; all of it as is (no slice view and its backward node)."""
    if isinstance(source, torch.Tensor):
        n = len(source)
        return lambda rows: source if rows.start == 0 and rows.stop >= n else source[rows]
    return source


def iter_gradients(
    model: nn.Module,
    source: torch.Tensor | RowMaker,
    total: int,
    target: Target,
    batch_size: int,
    wrt: dict | torch.Tensor | None = None,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, d score / d input, score)`` chunk by chunk.

    ``source`` is a tensor of ``total`` rows or a function building the rows of a slice. Uses
    ``torch.autograd.grad`` on the input only: parameters never receive a ``.grad``. Run inside
    :func:`pellucid._state.model_state`. ``wrt`` takes the gradient with respect to something else
    than the input: a store from ``state.capture(layer)`` (that layer's output, Grad-CAM), or a tensor
    the rows are computed from (the rows then keep their graph: one backward pass reaches it; each
    chunk's graph is freed by its pass, so rows of a shared graph fit in one chunk).
    """
    make = _rows(source)
    for rows in chunks(total, batch_size):
        with torch.enable_grad():
            xi = make(rows)
            if not isinstance(wrt, torch.Tensor):
                xi = xi.detach().requires_grad_(True)
            scores = target(model(xi), rows)
            to = xi if wrt is None else wrt if isinstance(wrt, torch.Tensor) else wrt["output"]
            # d sum(scores) / d to, seeded with ones: no sum node, no backward through it
            (grad,) = torch.autograd.grad(scores, to, grad_outputs=_ones(scores))
        yield rows, grad, scores.detach()


_ONES: dict = {}


def _ones(like: torch.Tensor) -> torch.Tensor:
    """A cached tensor of ones shaped like ``like`` (read-only: autograd only reads its seed)."""
    key = (like.shape, like.dtype, like.device)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = _ONES[key] = torch.ones_like(like, memory_format=torch.contiguous_format)
    return ones


def layout(t: torch.Tensor) -> torch.memory_format:
    """``t``'s memory format: channels-last for a 4-D tensor laid out so (and not contiguous too), else contiguous."""
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if last else torch.contiguous_format


def memory_format(model: nn.Module) -> torch.memory_format:
    """The layout of the model's first 2-D convolution weights that tell: channels-last or contiguous."""
    for m in model.modules():  # a weight that is both (1x1 kernel, one input channel) does not tell
        if isinstance(m, nn.Conv2d) and m.weight.dim() == 4:
            last, plain = m.weight.is_contiguous(memory_format=torch.channels_last), m.weight.is_contiguous()
            if last != plain:
                return torch.channels_last if last else torch.contiguous_format
    return torch.contiguous_format


def iter_logits(
    model: nn.Module, source: torch.Tensor | RowMaker, total: int, batch_size: int, follow_layout: bool = False
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, logits)`` chunk by chunk, without building a graph.

    ``follow_layout``: hand built rows to the model in its own memory format (channels-last rows to a
    channels-last model). Rows whose layout differs from the weights' can make every convolution reorder
    its weights (a third of Score-CAM's time on a torchvision resnet18), so Score-CAM follows the layout.
    Occlusion, LIME and KernelSHAP do not: on a quiet machine following it measured 0.95-1.06x their time
    on channels-last EfficientNet-Lite0 and resnet18 (``benchmarks/layout.py``), no gain.
    """
    make = _rows(source)
    layout = memory_format(model) if follow_layout else None
    with torch.no_grad():
        for rows in chunks(total, batch_size):
            batch = make(rows)
            if layout is not None and batch.dim() == 4:
                batch = batch.contiguous(memory_format=layout)
            yield rows, model(batch)


def input_gradient(
    model: nn.Module, x: torch.Tensor, target: Target, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and score of every row of ``x`` (a tensor), concatenated."""
    grads, scores = [], []
    for _, g, s in iter_gradients(model, x, len(x), target, batch_size):
        grads.append(g)
        scores.append(s)
    return _cat(grads), _cat(scores)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat``, without the copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def logits_of(model: nn.Module, source, total: int, batch_size: int) -> torch.Tensor:
    return _cat([out for _, out in iter_logits(model, source, total, batch_size)])


def quadrature(steps: int, rule: str = "gausslegendre", device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alphas`` in [0, 1] and weights summing to 1 for a path integral over [0, 1].

    ``"gausslegendre"`` (Captum's default; exact for polynomials of degree < 2*steps, so the
    completeness error of Integrated Gradients is small), ``"riemann_left"``, ``"riemann_right"``,
    ``"riemann_middle"`` and ``"riemann_trapezoid"`` as in Captum.
    """
    import numpy as np

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PellucidError(f"steps must be an int >= 1, got {steps!r}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, weights / 2
    elif rule == "riemann_trapezoid":
        if steps < 2:
            raise PellucidError("the trapezoid rule needs steps >= 2")
        alphas = np.linspace(0, 1, steps)
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
    elif rule in ("riemann_left", "riemann_right", "riemann_middle"):
        offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
        alphas = (np.arange(steps) + offset) / steps
        weights = np.full(steps, 1 / steps)
    else:
        raise PellucidError(f"unknown quadrature rule {rule!r}; choose gausslegendre, riemann_left, "
                            "riemann_right, riemann_middle or riemann_trapezoid")
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return as_t(alphas), as_t(weights)


# ---------------------------------------------------------------------------------------------
# path integrals and perturbation scores: any input shape (N, ...) (pixels, embeddings)

def row_index(rows: slice, per: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``r`` of a stacked batch where sample ``i = r // per`` is repeated ``per`` times."""
    idx = torch.arange(rows.start, rows.stop, device=device)
    return idx // per, idx % per


def path_integral(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: Target,
                  alphas: torch.Tensor, weights: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``sum_k w_k * d score / d input`` at ``baseline + a_k (x - baseline)``, shaped like ``x``.

    The path points are built chunk by chunk (memory ~ ``batch_size`` rows, not ``steps``). Works for
    any input ``(N, ...)`` (pixels, embeddings). Run inside ``model_state``; ``target`` is for ``x``.
    """
    steps, shape = len(alphas), (-1,) + (1,) * (x.dim() - 1)
    alphas, weights = alphas.to(x), weights.to(x)
    delta = x - baseline

    def make(rows):
        i, k = row_index(rows, steps, x.device)
        return baseline[i] + alphas[k].reshape(shape) * delta[i]

    total = torch.zeros_like(x)
    for rows, grad, _ in iter_gradients(model, make, len(x) * steps, target.repeat_interleave(steps), batch_size):
        i, k = row_index(rows, steps, x.device)
        total.index_add_(0, i, grad * weights[k].reshape(shape))
    return total


def perturbation_scores(model: nn.Module, make_rows, total: int, target: Target, batch_size: int,
                        follow_layout: bool = False) -> torch.Tensor:
    """Scores ``(total,)`` of perturbed inputs built chunk by chunk by ``make_rows(slice)``.

    ``target`` must already be laid out per row (e.g. ``target.repeat_interleave(samples)``);
    ``follow_layout`` as :func:`iter_logits`.
    """
    out = [target(logits, rows) for rows, logits in iter_logits(model, make_rows, total, batch_size, follow_layout)]
    return torch.cat(out)


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Softmax probabilities ``(N, K)`` of a batch, in batches, with the model's state untouched."""
    from ._state import model_state

    with model_state(model):
        return logits_of(model, x, len(x), resolve_batch_size(batch_size, x, model)).softmax(1)


class LayerSwap:
    """The layers after ``module`` run on outputs given for it: a forward hook (registered through ``state``,
    so removed with it) hands back the held output instead of the computed one.

    :meth:`scores` runs the layers before ``module`` once on the one image ``x1`` and the layers after it on
    ``m`` given outputs (the batch-1 tensors broadcast against them); a model where that fails runs ``x1``
    ``m`` times. Ablation-CAM ablates channels this way and CRAFT masks concepts.
    """

    def __init__(self, state, module: nn.Module):
        self._held: dict = {}
        self._shared = True
        state.forward_hook(module, lambda _m, _i, out: self._held.get("out", out))

    def scores(self, model: nn.Module, x1: torch.Tensor, out: torch.Tensor, target: Target) -> torch.Tensor:
        """``target``'s ``(m,)`` scores with ``module``'s output replaced by ``out`` (``m`` rows)."""
        m = len(out)
        self._held["out"] = out
        try:
            if self._shared:
                try:
                    found = target(model(x1))
                except Exception:  # noqa: BLE001 - a batch-1 tensor met the given rows badly: run it whole
                    found = None
                if found is not None and found.shape == (m,):
                    return found
                self._shared = False
            return target(model(x1.expand(m, *x1.shape[1:])))
        finally:
            self._held.clear()
