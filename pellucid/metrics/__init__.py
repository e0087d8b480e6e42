"""Can we trust the explanation: deletion/insertion and ROAD curves, model-randomization sanity checks,
infidelity and max-sensitivity, attacks on the explanation itself, and a side-by-side comparison.

- :mod:`.curves`: deletion and insertion (Petsiuk et al. 2018).
- :mod:`.sanity`: cascading model randomization (Adebayo et al. 2018).
- :mod:`.similarity`: Spearman rank correlation, SSIM and top-k overlap of two maps.
- :mod:`.compare`: every measure per method, beside a seeded random map.
"""

from ._maps import Method, accepts, as_map, attribution_map, random_attribution, resolve_method
from .compare import COLUMNS, Comparison, compare
from .curves import Curve, blurred, deletion, insertion
from .sanity import SanityCheck, randomizable_layers, sanity_check, top_layers
from .similarity import average_ranks, spearman, ssim

__all__ = [
    "COLUMNS", "Comparison", "Curve", "Method", "SanityCheck", "accepts", "as_map", "attribution_map",
    "average_ranks", "blurred", "compare", "deletion", "insertion", "random_attribution", "randomizable_layers",
    "resolve_method", "sanity_check", "spearman", "ssim", "top_layers",
]
