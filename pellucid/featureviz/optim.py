"""The two update rules of the loop: the course's normalized step and Adam, then the projection."""

from __future__ import annotations

import math

import torch


class _Adam:
    """``torch.optim.Adam`` (defaults) ascending one tensor: PyTorch's fused kernel where it has one.

    The same update as ``torch.optim.Adam`` on ``-g``, without the optimizer's per-step bookkeeping,
    which costs as much as the model's forward pass on a small image. ``torch._fused_adam_`` (the
    kernel behind ``Adam(fused=True)``) does the step in one pass; without it, six tensor ops.
    """

    def __init__(self, tensor: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None):
        self.tensor, self.lr, self.betas, self.eps, self.t = tensor, lr, betas, eps, 0
        self.m, self.v = torch.zeros_like(tensor), torch.zeros_like(tensor)
        if fused is None:
            fused = hasattr(torch, "_fused_adam_") and tensor.device.type in ("cpu", "cuda") and \
                tensor.dtype in (torch.float32, torch.float64) and tensor.is_contiguous()
        self.fused = fused
        self._steps = [torch.zeros((), dtype=torch.float32, device=tensor.device)] if fused else []

    @torch.no_grad()
    def step(self, g: torch.Tensor) -> None:
        (b1, b2), self.t = self.betas, self.t + 1
        if self.fused:
            self._steps[0].fill_(self.t)
            torch._fused_adam_([self.tensor], [g.contiguous()], [self.m], [self.v], [], self._steps, lr=self.lr,
                               beta1=b1, beta2=b2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=True)
            return
        root = math.sqrt(1 - b2**self.t)  # bias corrections folded into two scalars
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = self.v.sqrt().add_(self.eps * root)
        self.tensor.addcdiv_(self.m, denom, value=self.lr * root / (1 - b1**self.t))


COURSE_SIZE = 3 * 224 * 224  # the course's image: its step lr * g / ||g|| moves lr / 388 RMS per value


def _step(p, g: torch.Tensor, lr: float, opt, std: torch.Tensor | float | None) -> None:
    """Ascend: Adam on ``-g``, or the course's normalized step; then project (clamp pixels).

    The course steps ``lr * g / ||g||`` on a 3x224x224 image in the model's normalized space. Here the
    step is taken in that space too (``std`` converts) and scaled by ``sqrt(values / 150528)``, so that
    every pixel moves as far as in the course at any image size (the course's step exactly at 224²).
    """
    with torch.no_grad():
        if opt is not None:
            opt.step(g)
        else:
            size = lr * math.sqrt(g[0].numel() / COURSE_SIZE)
            if isinstance(std, float):  # one std for every channel: the normalized step is a scaled pixel step
                size, std = size * std, None
            gn = g if std is None else g * std  # d objective / d normalized input
            norm = torch.linalg.vector_norm(gn.flatten(1), dim=1, keepdim=True).clamp_min_(1e-12)
            # x += size * gn / ||gn|| * std, one fused op per image row
            p.tensor.view(len(g), -1).addcdiv_((gn if std is None else gn * std).flatten(1), norm, value=size)
        p.project()
