"""The JSON bodies the page posts."""

from __future__ import annotations

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
    eps: float = Field(0.1, ge=0.0, le=1.0)
    steps: int = Field(10, ge=1, le=200)


class VisualAsk(BaseModel):
    model: str = "digits"
    kind: str = "class"
    target: int = Field(0, ge=0)
    layer: str | None = None
    channel: int = Field(0, ge=0)
    steps: int = Field(100, ge=1, le=1000)
    job: str | None = Field(None, max_length=64)
