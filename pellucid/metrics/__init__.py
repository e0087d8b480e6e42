"""Can we trust the explanation: deletion/insertion and ROAD curves, model-randomization sanity checks,
infidelity and max-sensitivity, attacks on the explanation itself, and a side-by-side comparison.

- :mod:`.curves`: deletion and insertion (Petsiuk et al. 2018).
- :mod:`.gain`: the Symmetric Relevance Gain (Blücher et al. 2024).
- :mod:`.imputation`: ROAD, removal with noisy linear imputation (Rong et al. 2022).
- :mod:`.fidelity`: infidelity and max-sensitivity (Yeh et al. 2019).
- :mod:`.manipulation`: moving the map while the prediction stays (Ghorbani et al. 2019).
- :mod:`.sanity`: cascading model randomization (Adebayo et al. 2018).
- :mod:`.similarity`: Spearman rank correlation, SSIM and top-k overlap of two maps.
- :mod:`.table`: every measure per method, beside a seeded random map.
"""

from ._maps import MapMethod, accepts, as_map, map_of, random_attribution, resolve_method
from .curves import Curve, blurred, deletion, insertion
from .fidelity import infidelity, sensitivity
from .gain import RelevanceGain, srg
from .imputation import impute, road
from .manipulation import ATTACKABLE, ExplanationAttack, MapSimilarity, explanation_attack
from .sanity import SanityCheck, randomizable_layers, sanity_check, top_layers
from .similarity import average_ranks, spearman, ssim, topk_overlap
from .table import COLUMNS, Comparison, compare

__all__ = [
    "ATTACKABLE", "COLUMNS", "Comparison", "Curve", "ExplanationAttack", "MapMethod", "MapSimilarity", "RelevanceGain",
    "SanityCheck",
    "accepts", "as_map", "average_ranks", "blurred", "compare", "deletion", "explanation_attack", "impute",
    "infidelity", "insertion", "map_of", "random_attribution", "randomizable_layers", "resolve_method", "road",
    "sanity_check", "sensitivity", "spearman", "srg", "ssim", "top_layers", "topk_overlap",
]
