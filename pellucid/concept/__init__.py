"""What concepts it uses: concept activation vectors, TCAV with honest statistics, and concept discovery.

:func:`cav` (``vectors.py``) finds a concept's direction in a layer (a linear SVM, or FastCAV's mean
difference); :func:`tcav` (``significance.py``) tests whether that direction raises a class's score more often
than random directions do, with runs that are independent replications; :func:`concepts` (``discovery.py``,
CRAFT) finds the concepts a class is made of by NMF of crops' activations and ranks them by total Sobol index
(``sobol.py``). ``crops.py`` cuts the random crops both use. Visualize any of these directions with
``pl.visualize(model, pl.direction(layer, vector))``.
"""

from __future__ import annotations

from .discovery import Concept, Concepts, concept_layer, concepts
from .significance import TCAVResult, tcav
from .vectors import CAV, cav

__all__ = ["cav", "CAV", "tcav", "TCAVResult", "concepts", "Concepts", "Concept", "concept_layer"]
