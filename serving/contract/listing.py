"""A listing and its scored result: the field lists every entry point derives from.

`Listing` is the wire listing: the API takes it (`schemas.Item` is it under its OpenAPI name), the
review queue stores it, and a file row becomes one (`text.listing_from_record`). `ScoredListing`
is one listing with the model's text, calibrated probabilities, decisions and the model that made
them; the API response, the bulk output columns and the review queue's suggestion are all views
of it.

Compromise: a listing read from a file may hold values that are not strings (JSONL numbers,
booleans). `listing_from_record` turns them into the strings the text builder would make of them,
so a `Listing` always holds strings and the built text is the same either way; the file's own
values still go to the bulk output unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from serving.contract.decide import Decision

AttributeValue = str | int | float | bool | None


class Listing(BaseModel):
    """One product listing."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(default=None, description="echoed back unchanged")
    title: str = Field(default="", description="listing title")
    description: str = Field(default="", description="listing body")
    brand: str = Field(default="", description="brand or manufacturer")
    seller_category: str = Field(default="", description="the seller's category path")
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict, description="key/value specifications folded into the text"
    )


LISTING_FIELDS: tuple[str, ...] = tuple(Listing.model_fields)
"""Every field, in wire order: id, title, description, brand, seller_category, attributes."""
CONTENT_FIELDS: tuple[str, ...] = tuple(f for f in LISTING_FIELDS if f != "id")
"""The fields the model reads: the text fields and the attributes."""
TEXT_FIELDS: tuple[str, ...] = tuple(f for f in CONTENT_FIELDS if f != "attributes")
"""The free-text fields (the default text columns of a catalog file)."""

# The bulk output's score columns around the per-label probabilities `p_<label>`.
_HEAD_COLUMNS = ("decision", "risk")
_TAIL_COLUMNS = ("labels", "reasons", "model_version", "taxonomy_version")
PROBABILITY_PREFIX = "p_"


def score_columns(labels: list[str]) -> list[str]:
    """The columns bulk scoring adds to each row, in output order."""
    return [*_HEAD_COLUMNS, *(PROBABILITY_PREFIX + lb for lb in labels), *_TAIL_COLUMNS]


@dataclass(frozen=True)
class ScoredListing:
    """A listing with the model's text, calibrated probabilities, decisions and model."""

    listing: Listing
    text: str
    truncated: bool
    decision: Decision
    risk: float
    probabilities: dict[str, float]
    label_decisions: dict[str, Decision]
    reasons: list[str]
    model_name: str
    model_version: str
    taxonomy_version: str

    @property
    def labels(self) -> list[str]:
        """Labels that were flagged or sent to review."""
        return [k for k, v in self.label_decisions.items() if v != "clear"]

    def output_columns(self) -> dict[str, Any]:
        """The bulk output's score columns (`score_columns`), probabilities rounded to 1e-6."""
        return {
            "decision": self.decision,
            "risk": round(self.risk, 6),
            **{PROBABILITY_PREFIX + lb: round(p, 6) for lb, p in self.probabilities.items()},
            "labels": "|".join(self.labels),
            "reasons": "|".join(self.reasons),
            "model_version": self.model_version,
            "taxonomy_version": self.taxonomy_version,
        }

    def review_record(self) -> dict[str, Any]:
        """The review queue's input: the listing's fields, the model's text and its suggestion."""
        return {
            **self.listing.model_dump(),
            "text": self.text,
            "probabilities": self.probabilities,
            "label_decisions": self.label_decisions,
            "decision": self.decision,
            "reasons": self.reasons,
        }
