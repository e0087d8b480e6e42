"""How easily is it fooled: fooling images, FGSM, PGD, the smallest flipping epsilon, robustness curves;
APGD, FAB, Square and AutoAttack (the worst case robustness papers report); Carlini-Wagner and DeepFool.

Every attack is a loop of the one gradient primitive (:func:`pellucid._grad.input_gradient`) inside
:func:`pellucid._state.model_state` (``_loop``). The loss is the cross-entropy, through a
``"log_softmax"`` target: ``d CE(label) / dx = -d log_softmax[label] / dx``. Inputs and outputs are in
pixel space [0, 1]. With early stopping only the rows still running go through the model.
"""

from ._loop import NORMS
from .auto_pgd import apgd
from .boundary import fab
from .ensemble import AutoAttackResult, autoattack
from .fooling import FoolingResult, fooling_image, random_targets
from .gradient import _pgd, fgsm, pgd
from .minimal import cw, deepfool
from .robustness import CURVE_ATTACKS, MINIMAL_ATTACKS, RobustnessCurve, default_eps, minimal_epsilon, robustness_curve
from .score_based import square

__all__ = ["CURVE_ATTACKS", "AutoAttackResult", "apgd", "autoattack", "cw", "deepfool", "fab", "square"]
__all__ += ["MINIMAL_ATTACKS", "NORMS", "FoolingResult", "RobustnessCurve", "_pgd", "default_eps", "fgsm",
           "fooling_image", "minimal_epsilon", "pgd", "random_targets", "robustness_curve"]
