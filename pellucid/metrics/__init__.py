"""Can we trust the explanation: deletion/insertion and ROAD curves, model-randomization sanity checks,
infidelity and max-sensitivity, attacks on the explanation itself, and a side-by-side comparison.

- :mod:`.curves`: deletion and insertion (Petsiuk et al. 2018).
- :mod:`.road`: ROAD, removal with noisy linear imputation (Rong et al. 2022).
- :mod:`.fidelity`: infidelity and max-sensitivity (Yeh et al. 2019).
- :mod:`.explanation_attack`: moving the map while the prediction stays (Ghorbani et al. 2019).
- :mod:`.sanity`: cascading model randomization (Adebayo et al. 2018).
- :mod:`.similarity`: Spearman rank correlation, SSIM and top-k overlap of two maps.
- :mod:`.compare`: every measure per method, beside a seeded random map.
"""

from ._maps import Method, accepts, as_map, attribution_map, random_attribution, resolve_method
from .compare import COLUMNS, Comparison, compare
from .curves import Curve, blurred, deletion, insertion
from .explanation_attack import ATTACKABLE, ExplanationAttack, MapSimilarity, explanation_attack
from .fidelity import infidelity, sensitivity
from .road import impute, road
from .sanity import SanityCheck, randomizable_layers, sanity_check, top_layers
from .similarity import average_ranks, spearman, ssim, topk_overlap

__all__ = [
    "ATTACKABLE", "COLUMNS", "Comparison", "Curve", "ExplanationAttack", "MapSimilarity", "Method", "SanityCheck",
    "accepts", "as_map", "attribution_map", "average_ranks", "blurred", "compare", "deletion", "explanation_attack",
    "impute", "infidelity", "insertion", "random_attribution", "randomizable_layers", "resolve_method", "road",
    "sanity_check", "sensitivity", "spearman", "ssim", "top_layers", "topk_overlap",
]
