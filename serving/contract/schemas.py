"""Request and response schemas of the classification API (shared with review and bulk output)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serving.contract.decide import Decision
from serving.contract.listing import Listing

# The API's name for the decision type; one definition, in decide.py.
DecisionName = Decision


class Item(Listing):
    """One listing to classify."""


class ClassifyRequest(BaseModel):
    """A batch of listings."""

    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(min_length=1)


class Term(BaseModel):
    """A word of the input and how much removing it lowered the label's probability."""

    term: str
    weight: float


class LabelResult(BaseModel):
    """One label's calibrated probability, decision and control references."""

    label: str
    probability: float
    decision: DecisionName
    control_refs: list[str]
    explanation: list[Term] | None = None


class ItemResult(BaseModel):
    """The decision for one listing."""

    id: str | int | None
    decision: DecisionName
    risk: float
    labels: list[LabelResult]
    reasons: list[str]


class ModelInfo(BaseModel):
    """Which model answered."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    taxonomy_version: str
    backend: str


class ClassifyResponse(BaseModel):
    """Results in request order, and the model that produced them."""

    items: list[ItemResult]
    model: ModelInfo


class ErrorBody(BaseModel):
    """The one error envelope of every failure."""

    error: str
    type: str
    detail: object | None = None
