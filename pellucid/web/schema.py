"""The JSON bodies the page posts, and the 422 that answers a body that does not fit them.

Python's JSON parser accepts ``NaN`` and ``Infinity``; floats refuse them (``allow_inf_nan=False``),
and :func:`validation_error` answers with a body that is valid JSON whatever the input held."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field


class Ask(BaseModel):
    model: str = "digits"
    image: str
    target: int | None = Field(None, ge=0)
    job: str | None = Field(None, max_length=64)


class ExplainAsk(Ask):
    method: str


class AttackAsk(Ask):
    kind: str = "fgsm"
    eps: float = Field(0.1, ge=0.0, le=1.0, allow_inf_nan=False)
    steps: int = Field(10, ge=1, le=200)


class VisualAsk(BaseModel):
    model: str = "digits"
    kind: str = "class"
    target: int = Field(0, ge=0)
    layer: str | None = None
    channel: int = Field(0, ge=0)
    steps: int = Field(100, ge=1, le=1000)
    job: str | None = Field(None, max_length=64)


class StrategiesAsk(BaseModel):
    model: str = "digits"
    target: int = Field(ge=0)
    method: str = "lrp"
    images: int = Field(400, ge=2, le=1000)  # the held-out digits: 1,000
    job: str | None = Field(None, max_length=64)


class ConceptsAsk(BaseModel):
    model: str = "digits"
    target: int = Field(ge=0)
    layer: str | None = Field(None, max_length=200)
    n: int = Field(6, ge=1, le=10)
    images: int = Field(16, ge=1, le=32)  # Sobol indices cost designs x (n + 2) passes per image
    job: str | None = Field(None, max_length=64)


def _shown(value) -> str | None:
    """A request value for a message (``NaN``, ``inf``, strings, numbers); ``None`` for containers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN").replace("inf", "Infinity")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)[:80]
    return None


def validation_error(errors) -> dict:
    """FastAPI's validation errors as a JSON-safe body: each names the field and the value it got."""
    detail = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        got = _shown(e.get("input")) if "input" in e else None
        msg = e.get("msg", "invalid value") + (f", got {got}" if got is not None else "")
        detail.append({"loc": loc, "msg": msg, "type": str(e.get("type", ""))})
    return {"detail": detail}
