"""What every section builder of the report reads: the model, the images, their labels, and what is computed
once for all sections (the predictions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._grad import predictions
from . import render


@dataclass
class ReportContext:
    model: nn.Module
    x: torch.Tensor
    labels: torch.Tensor | None
    out: Path
    seed: int = 0
    progress: bool = True
    cache: dict = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        if "probs" not in self.cache:
            self.cache["probs"] = predictions(self.model, self.x)
        return self.cache["probs"]

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)

    @property
    def row_titles(self) -> list[str]:
        return render.image_row_titles(self.model, self.probs, self.labels)

    def label(self, k: int) -> str:
        return self.model.label(k) if hasattr(self.model, "label") else str(k)
