"""Pure parts of the review queue (issue 6): status, uncertainty, kappa, CSV cells, security."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from serving.contract.schemas import Term
from serving.review.errors import InvalidError
from serving.review.explain import highlight
from serving.review.export import neutralize_cell
from serving.review.kappa import agreement_per_label, cohens_kappa
from serving.review.queue import QueueFilters
from serving.review.rules import (
    input_hash,
    item_status,
    open_slots,
    suggested_labels,
    uncertainty,
    wants_double_review,
)
from serving.review.security import LoginLimiter, SessionSigner, hash_password, verify_password
from serving.review.similar import Doc, SimilarIndex

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=10)
EARLIER = NOW - dt.timedelta(minutes=10)


@dataclass
class R:
    reviewer: str
    status: str
    labels: list[str] | None = None
    decision: str | None = None
    kind: str = "review"
    lease_until: dt.datetime = LATER


@pytest.mark.parametrize(
    ("reviews", "required", "expected"),
    [
        ([], 1, "pending"),
        ([R("a", "draft")], 1, "in_review"),
        ([R("a", "draft", lease_until=EARLIER)], 1, "pending"),  # lease ran out
        ([R("a", "discarded")], 1, "pending"),
        ([R("a", "submitted", ["uav"], "controlled")], 1, "decided"),
        ([R("a", "submitted", [], "needs_info")], 1, "decided"),
        ([R("a", "submitted", ["uav"], "controlled")], 2, "pending"),
        ([R("a", "submitted", ["uav"], "controlled"), R("b", "draft")], 2, "in_review"),
        (
            [
                R("a", "submitted", ["uav", "marine"], "controlled"),
                R("b", "submitted", ["marine", "uav"], "controlled"),
            ],
            2,
            "decided",
        ),
        (
            [R("a", "submitted", ["uav"], "controlled"), R("b", "submitted", [], "not_controlled")],
            2,
            "disagreement",
        ),
        (
            [
                R("a", "submitted", ["uav"], "controlled"),
                R("b", "submitted", [], "not_controlled"),
                R("boss", "submitted", ["uav"], "controlled", kind="adjudication"),
            ],
            2,
            "decided",
        ),
    ],
)
def test_item_status(reviews, required, expected):
    assert item_status(reviews, required, NOW) == expected


def test_open_slots_count_live_claims_and_submissions():
    assert open_slots([], 2, NOW) == 2
    assert open_slots([R("a", "draft")], 2, NOW) == 1
    assert open_slots([R("a", "draft"), R("b", "draft")], 2, NOW) == 0
    assert open_slots([R("a", "draft", lease_until=EARLIER)], 1, NOW) == 1
    assert open_slots([R("a", "submitted", [], "not_controlled")], 1, NOW) == 0


def test_uncertainty_margin_and_entropy():
    margin, entropy = uncertainty({"uav": 0.48, "marine": 0.9}, {"uav": 0.5, "marine": 0.6})
    assert margin == pytest.approx(0.02)
    assert entropy == pytest.approx(0.9988, abs=1e-3)  # p=0.48 is nearly a coin toss
    assert uncertainty({"uav": 0.99}, {"uav": 0.5})[0] == pytest.approx(0.49)


def test_suggested_labels_from_decisions_or_thresholds():
    probs = {"uav": 0.7, "marine": 0.3, "navigation": 0.01}
    assert suggested_labels(probs, {"uav": "flag", "marine": "review", "navigation": "clear"}) == [
        "uav",
        "marine",
    ]
    assert suggested_labels(probs, None, {"uav": 0.5, "marine": 0.5}) == ["uav"]


def test_input_hash_is_stable_and_field_sensitive():
    a = {"id": 1, "title": "x", "description": "y"}
    assert input_hash(a) == input_hash({"id": "1", "title": "x", "description": "y", "brand": ""})
    assert input_hash(a) != input_hash(a | {"title": "x2"})
    assert input_hash(a) != input_hash(a | {"id": 2})


def test_double_review_share_is_deterministic():
    hashes = [input_hash({"id": i, "title": "t"}) for i in range(2000)]
    chosen = [h for h in hashes if wants_double_review(h, 0.25)]
    assert 0.2 < len(chosen) / len(hashes) < 0.3
    assert chosen == [h for h in hashes if wants_double_review(h, 0.25)]
    assert not any(wants_double_review(h, 0.0) for h in hashes)
    assert all(wants_double_review(h, 1.0) for h in hashes)


def test_queue_filters_refuse_bad_order_and_label():
    with pytest.raises(InvalidError):
        QueueFilters(order="random")
    with pytest.raises(InvalidError):
        QueueFilters(label="uav%' OR 1=1 --")
    assert QueueFilters(label="sensors_lasers", order="entropy").as_params() == {
        "label": "sensors_lasers",
        "order": "entropy",
    }


def test_cohens_kappa_known_example():
    # The textbook example: 50 items, both yes 20, A yes B no 5, A no B yes 10, both no 15.
    a = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(a, a) == pytest.approx(1.0)
    assert cohens_kappa([True, True], [True, True]) is None  # chance agreement is 1: undefined
    assert cohens_kappa([], []) is None


def test_agreement_per_label():
    pairs = [(["uav"], ["uav"]), (["uav"], []), ([], []), (["marine"], ["marine"])]
    rows = {r.label: r for r in agreement_per_label(pairs, ["uav", "marine", "navigation"])}
    assert rows["uav"].agreement == pytest.approx(0.75)
    assert rows["uav"].kappa == pytest.approx(cohens_kappa([1, 1, 0, 0], [1, 0, 0, 0]))
    assert rows["marine"].kappa == pytest.approx(1.0)
    assert rows["navigation"].kappa is None and rows["navigation"].agreement == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        (None, ""),
        (42, "42"),
    ],
)
def test_neutralize_cell(value, expected):
    assert neutralize_cell(value) == expected


def test_password_hash_round_trip():
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("anything", None)
    assert hash_password("same") != hash_password("same")  # salted


def test_session_cookie_signature_expiry_and_csrf(monkeypatch):
    import itsdangerous.timed

    signer = SessionSigner("s" * 40, max_age_s=60)
    cookie, data = signer.issue(7)
    assert signer.read(cookie) == data
    assert signer.read(cookie[:-2] + "xx") is None
    assert SessionSigner("t" * 40, 60).read(cookie) is None
    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() - 3600)
    old, _ = signer.issue(7)
    monkeypatch.undo()
    assert signer.read(old) is None  # older than max_age: the session expired
    token = signer.csrf_token(data.sid)
    assert signer.check_csrf(data.sid, token)
    assert not signer.check_csrf(data.sid, "")
    assert not signer.check_csrf("other", token)


def test_login_limiter_blocks_after_failures_and_recovers():
    limiter = LoginLimiter(max_failures=3, window_s=60)
    for _ in range(3):
        assert limiter.retry_after("alice", "1.2.3.4", now=100.0) == 0
        limiter.failed("alice", "1.2.3.4", now=100.0)
    assert limiter.retry_after("alice", "1.2.3.4", now=101.0) > 0
    assert limiter.retry_after("ALICE", "1.2.3.4", now=101.0) > 0
    assert limiter.retry_after("alice", "5.6.7.8", now=101.0) == 0
    assert limiter.retry_after("alice", "1.2.3.4", now=161.0) == 0


def test_highlight_keeps_text_and_marks_words():
    text = "LWIR thermal core | uncooled microbolometer 640x512"
    terms = [Term(term="microbolometer", weight=0.3), Term(term="LWIR", weight=0.1)]
    segments = highlight(text, {"sensors_lasers": terms})
    assert "".join(s.text for s in segments) == text
    marked = {s.text: s.label for s in segments if s.label}
    assert marked == {"microbolometer": "sensors_lasers", "LWIR": "sensors_lasers"}


def test_similar_index_ranks_overlap_first():
    index = SimilarIndex(
        [
            Doc(1, "uncooled microbolometer thermal camera core 640x512"),
            Doc(2, "cotton t-shirt pack of three"),
            Doc(3, "thermal imaging camera lwir"),
        ]
    )
    found = index.query("LWIR uncooled microbolometer core", k=3)
    assert [i for i, _ in found][:2] == [1, 3]
    assert all(i != 2 for i, _ in found)
    # `exclude` drops the item itself (the one on the page), not what resembles it.
    excluded = index.query("LWIR uncooled microbolometer core", k=3, exclude=1)
    assert [i for i, _ in excluded][:1] == [3]
    assert all(i != 1 for i, _ in excluded)


def test_occlusion_weighs_each_distinct_word_against_the_unchanged_text():
    """Issue 13: one occlusion (`serving.explain`) for the API and the review page."""
    import numpy as np

    from serving.explain import explain_text, plan_occlusion

    plan = plan_occlusion("thermal core, thermal | LWIR", max_words=48)
    assert plan.words == ("thermal", "core", "LWIR")  # punctuation stripped, each word once
    assert plan.texts == (
        "thermal core, thermal | LWIR",
        "core, | LWIR",
        "thermal thermal | LWIR",
        "thermal core, thermal |",
    )
    assert plan_occlusion("a b c", max_words=2).words == ("a", "b")

    def probabilities(texts: list[str]) -> np.ndarray:
        # label 0 rises with "thermal" and "LWIR"; label 1 with nothing
        return np.array([[0.1 + 0.5 * ("thermal" in t) + 0.2 * ("LWIR" in t), 0.3] for t in texts])

    terms = explain_text(probabilities, "thermal core, thermal | LWIR", ["sensors", "uav"])
    assert terms == {
        "sensors": [Term(term="thermal", weight=0.5), Term(term="LWIR", weight=0.2)],
        "uav": [],
    }
    assert explain_text(probabilities, " | ", ["sensors", "uav"]) == {}


def test_highlight_marks_words_with_their_punctuation():
    segments = highlight("core, LWIR.", {"sensors_lasers": [Term(term="core", weight=0.2)]})
    assert "".join(s.text for s in segments) == "core, LWIR."
    assert [(s.text, s.label) for s in segments if s.label] == [("core,", "sensors_lasers")]


@pytest.mark.parametrize(
    ("a", "b", "b_extra", "same"),
    [
        # an API attribute and a file's extra text column with the same value as text: one item
        ({"id": 7, "title": "x", "attributes": {"rate": 20}}, {"id": "7", "title": "x"},
         {"rate": "20"}, True),
        ({"id": "a", "title": "x", "attributes": {"n": ""}}, {"id": "a", "title": "x"}, {}, True),
        ({"id": "", "title": "x"}, {"id": None, "title": "x"}, {}, True),
        ({"id": "a", "title": "x"}, {"id": "b", "title": "x"}, {}, False),
        ({"id": "a", "title": "x"}, {"id": "a", "title": "x", "brand": "y"}, {}, False),
        ({"id": "a", "title": "x"}, {"id": "a", "title": "x"}, {"notes": "n"}, False),
    ],
)  # fmt: skip
def test_intake_item_key(a, b, b_extra, same):
    from serving.contract.listing import Listing
    from serving.review.intake import IntakePolicy

    key_a = IntakePolicy.item_key(Listing(**a))
    assert (key_a == IntakePolicy.item_key(Listing(**b), b_extra)) is same


def test_intake_policies_admit_named_decisions():
    from serving.review.intake import IntakePolicy

    admitted = {
        p.name: [d for d in ("flag", "review", "clear") if p.admits(d)] for p in IntakePolicy
    }
    assert admitted == {
        "EVERY": ["flag", "review", "clear"],
        "NOT_CLEAR": ["flag", "review"],
        "REVIEW": ["review"],
    }
