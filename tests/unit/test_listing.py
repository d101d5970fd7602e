"""The listing field lists are written once and every entry point derives from them (issue 13)."""

from __future__ import annotations

from serving.contract.listing import (
    CONTENT_FIELDS,
    LISTING_FIELDS,
    TEXT_FIELDS,
    Listing,
    ScoredListing,
    score_columns,
)
from serving.contract.readers import DEFAULT_TEXT_COLS
from serving.contract.schemas import Item
from serving.contract.text import build_listing_text, build_text, listing_from_record


def test_field_lists_come_from_the_listing():
    text = ("title", "description", "brand", "seller_category")
    assert (text, (*text, "attributes")) == (TEXT_FIELDS, CONTENT_FIELDS)
    assert ("id", *CONTENT_FIELDS) == LISTING_FIELDS
    assert DEFAULT_TEXT_COLS == TEXT_FIELDS
    assert tuple(Item.model_fields) == LISTING_FIELDS


def test_record_roles_and_extra_columns():
    record = {"name": "Thermal core", "maker": "Acme", "brand": 7, "attributes": {"band": True}}
    listing, extra = listing_from_record(record, ["name", "brand", "maker", "attributes"])
    assert listing.title == "Thermal core" and listing.brand == "7"
    assert listing.attributes == {"band": "yes"}
    assert extra == {"maker": "Acme"}
    built = build_listing_text(listing, extra=extra)
    assert built == build_text("Thermal core", brand=7, attributes={"band": True}, extra=extra)


def test_scored_listing_views():
    scored = ScoredListing(
        listing=Listing(id="a", title="t"),
        text="t",
        truncated=False,
        decision="review",
        risk=0.41234567,
        probabilities={"uav": 0.41234567, "marine": 0.1},
        label_decisions={"uav": "review", "marine": "clear"},
        reasons=["insufficient_detail"],
        model_name="dualscreen",
        model_version="1",
        taxonomy_version="2026.1",
    )
    columns = scored.output_columns()
    assert list(columns) == score_columns(["uav", "marine"])
    assert columns["risk"] == 0.412346 and columns["labels"] == "uav"
    record = scored.review_record()
    assert record["id"] == "a" and record["text"] == "t" and record["decision"] == "review"
