"""Shortcuts ("Clever Hans"): benchmarks with known ground truth, and two ways to fix a shortcut.

``decoy`` (Decoy MNIST, Ross et al. 2017), ``artifacts`` (plant an artifact in a known fraction of one
class, paste it onto any images), ``right_reasons`` (train with a penalty on the input gradients where the
model must not look) and ``projective`` (``clarc``: Projective ClArC, Anders et al. 2022, projects the
artifact's direction out of one layer's activations).
"""

from __future__ import annotations

from .artifacts import ARTIFACTS, POSITIONS, artifact_mask, paste_artifact, plant_artifact
from .decoy import decoy_digits
from .projective import ClarcModel, clarc
from .right_reasons import train_right_reasons

__all__ = ["ARTIFACTS", "POSITIONS", "ClarcModel", "artifact_mask", "clarc", "decoy_digits", "paste_artifact",
           "plant_artifact", "train_right_reasons"]
