"""The review store on a real SQLite file and a real PostgreSQL database (issue 6)."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import text

from serving.review import db
from serving.review.audit import item_events, list_events, record_event
from serving.review.errors import ConflictError, ForbiddenError, InvalidError
from serving.review.export import export_audit_csv, export_reviews
from serving.review.models import AuditEvent, Base, Item
from serving.review.queue import (
    QueueFilters,
    claim_item,
    claim_next,
    count_by_status,
    list_queue,
    release_expired,
    skip_review,
    submit_review,
)
from serving.review.stats import admin_stats
from serving.review.store import ReviewStore
from tests.review.conftest import LABELS, enqueue, later, prediction

TABLES = ["alembic_version", "audit_events", "items", "reviews", "suggestions", "users"]


def test_migrations_up_down_and_up_again(db_url):
    engine = db.make_engine(db_url)
    try:
        assert db.current_revision(engine) is None
        db.migrate(engine)
        assert db.current_revision(engine) == db.head_revision()
        assert db.table_names(engine) == TABLES
        db.downgrade(engine)
        assert db.current_revision(engine) is None
        assert db.table_names(engine) == ["alembic_version"]
        db.migrate(engine)
        assert db.table_names(engine) == TABLES
    finally:
        engine.dispose()


def test_migrations_match_the_models(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # The migration holds every table, column, index and constraint the models declare.
    assert diff == []


def test_store_refuses_a_database_that_is_behind(db_url):
    from serving.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="dualscreen review migrate"):
        ReviewStore.open(db_url, migrate=False)


def test_sqlite_file_uses_wal_and_is_private(tmp_path):
    store = ReviewStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    assert (tmp_path / "r.db").stat().st_mode & 0o777 == 0o600
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.dispose()


def test_enqueue_is_idempotent_by_input_hash_and_model_version(store):
    items = [prediction(f"sku-{i}", f"listing {i}", {"uav": 0.1 * i}) for i in range(5)]
    assert enqueue(store, items) == 5
    assert enqueue(store, items) == 0
    assert enqueue(store, items + items[:2]) == 0  # duplicates inside one call count once
    assert enqueue(store, items[:3], version="v2") == 3  # a new model adds suggestions
    changed = [dict(items[0], title="listing 0, edited")]
    assert enqueue(store, changed) == 1  # a changed listing is a new snapshot
    with store.session() as session:
        assert session.query(Item).count() == 6
        first = session.query(Item).filter_by(external_id="sku-0").order_by(Item.id).first()
        assert [s.model_version for s in first.suggestions] == ["v1", "v2"]
        assert first.model_version == "v2"
        actions = [e.action for e in item_events(session, first.id)]
        assert actions == ["item.enqueue", "suggestion.add"]


def test_concurrent_enqueue_of_the_same_listings(store):
    items = [prediction(f"c-{i}", f"concurrent {i}", {"marine": 0.4}) for i in range(20)]
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(enqueue(store, items))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(results) == 20
    with store.session() as session:
        assert session.query(Item).count() == 20


def test_ordering_most_uncertain_first_and_filters(store):
    items = [
        prediction("far", "far from threshold", {"uav": 0.02}),
        prediction("near", "right at the threshold", {"uav": 0.49}),
        prediction("mid", "halfway", {"marine": 0.3}),
        prediction("flat", "flat but sure", {"navigation_avionics": 0.95}),
    ]
    enqueue(store, items[:3], source="import:a.csv")
    enqueue(store, items[3:], source="api", version="v9")
    with store.session() as session:
        by_margin = [i.external_id for i in list_queue(session)]
        assert by_margin[:2] == ["near", "mid"]
        by_entropy = [i.external_id for i in list_queue(session, QueueFilters(order="entropy"))]
        assert by_entropy[0] == "near"
        assert by_entropy.index("far") > by_entropy.index("mid")
        marine = list_queue(session, QueueFilters(label="marine"))
        assert [i.external_id for i in marine] == ["mid"]
        assert [i.external_id for i in list_queue(session, QueueFilters(source="api"))] == ["flat"]
        assert [i.external_id for i in list_queue(session, QueueFilters(model_version="v9"))] == [
            "flat"
        ]
        assert list_queue(session, QueueFilters(min_age_hours=1)) == []
        assert len(list_queue(session, QueueFilters(max_age_hours=1))) == 4
        future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
        assert len(list_queue(session, QueueFilters(min_age_hours=1), now=future)) == 4
        oldest = [i.external_id for i in list_queue(session, QueueFilters(order="oldest"))]
        assert oldest[:3] == ["far", "near", "mid"]


def test_label_filter_treats_underscore_literally(store):
    enqueue(store, [prediction("s", "sensor", {"sensors_lasers": 0.4})])
    with store.session() as session:
        assert len(list_queue(session, QueueFilters(label="sensors_lasers"))) == 1
        assert list_queue(session, QueueFilters(label="sensorsxlasers")) == []


def _claim(store: ReviewStore, reviewer: str, **kw):
    with store.transaction() as session:
        review = claim_next(session, reviewer, **kw)
        return None if review is None else (review.item_id, review.id, review.version)


def test_two_reviewers_never_get_the_same_item(store):
    enqueue(store, [prediction(f"p{i}", f"item {i}", {"uav": 0.3 + i / 100}) for i in range(3)])
    a = _claim(store, "alice")
    b = _claim(store, "bob")
    c = _claim(store, "carol")
    assert len({a[0], b[0], c[0]}) == 3
    assert _claim(store, "dave") is None
    with store.session() as session:
        assert count_by_status(session)["in_review"] == 3


def test_concurrent_claims_are_distinct(store):
    enqueue(store, [prediction(f"q{i}", f"item {i}", {"uav": 0.4}) for i in range(6)])
    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def run(name: str) -> None:
        barrier.wait()
        got = _claim(store, name)
        with lock:
            claimed.append(got[0] if got else -1)

    threads = [threading.Thread(target=run, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and -1 not in claimed


def test_expired_claim_returns_to_the_queue_and_late_submit_conflicts(store):
    enqueue(store, [prediction("e1", "lease test", {"uav": 0.45})])
    with store.transaction() as session:
        review = claim_next(session, "alice", lease_s=30)
        item_id, review_id, version = review.item_id, review.id, review.version
    assert _claim(store, "bob") is None  # held by alice
    with store.transaction() as session:
        assert release_expired(session, now=later(10)) == 0
        assert release_expired(session, now=later(60)) == 1
    with store.session() as session:
        assert session.get(Item, item_id).status == "pending"
    with store.transaction() as session:
        taken = claim_next(session, "bob", now=later(61))
        submit_review(
            session, item_id, taken.id, taken.version, "bob", ["uav"], "controlled", "drone"
        )
    with store.transaction() as session, pytest.raises(ConflictError) as caught:
        submit_review(session, item_id, review_id, version, "alice", [], "not_controlled")
    detail = caught.value.detail
    assert detail["status"] == "decided"
    assert detail["submitted"][0]["reviewer"] == "bob"
    assert detail["submitted"][0]["labels"] == ["uav"]
    with store.session() as session:
        actions = [e.action for e in item_events(session, item_id)]
        assert actions == ["item.enqueue", "claim", "claim.expire", "claim", "review.submit"]


def test_concurrent_submissions_second_gets_conflict_with_first_decision(store):
    enqueue(store, [prediction("c1", "double click", {"marine": 0.5})])
    item_id, review_id, version = _claim(store, "alice")
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def submit(labels: list[str]) -> None:
        barrier.wait()
        try:
            with store.transaction() as session:
                submit_review(
                    session,
                    item_id,
                    review_id,
                    version,
                    "alice",
                    labels,
                    "controlled" if labels else "not_controlled",
                )
            outcomes.append(("ok", labels))
        except ConflictError as exc:
            outcomes.append(("conflict", exc.detail))

    threads = [threading.Thread(target=submit, args=(lb,)) for lb in (["marine"], [])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = sorted(o[0] for o in outcomes)
    assert kinds == ["conflict", "ok"]
    winner = next(o[1] for o in outcomes if o[0] == "ok")
    detail = next(o[1] for o in outcomes if o[0] == "conflict")
    assert detail["submitted"][0]["labels"] == winner  # the loser sees the first decision
    with store.session() as session:
        item = session.get(Item, item_id)
        assert item.status == "decided"
        assert [r.status for r in item.reviews] == ["submitted"]


def test_submit_checks_owner_labels_and_decision(store):
    enqueue(store, [prediction("v1", "validation", {"uav": 0.4})])
    item_id, review_id, version = _claim(store, "alice")
    with store.transaction() as session, pytest.raises(ForbiddenError):
        submit_review(session, item_id, review_id, version, "mallory", [], "not_controlled")
    with store.transaction() as session, pytest.raises(InvalidError, match="unknown label"):
        submit_review(session, item_id, review_id, version, "alice", ["nukes"], "controlled")
    with store.transaction() as session, pytest.raises(InvalidError):
        submit_review(session, item_id, review_id, version, "alice", [], "controlled")
    with store.transaction() as session, pytest.raises(InvalidError):
        submit_review(session, item_id, review_id, version, "alice", ["uav"], "not_controlled")
    with store.transaction() as session:
        submit_review(session, item_id, review_id, version, "alice", [], "needs_info", "no spec")


def test_skip_gives_the_item_to_someone_else(store):
    enqueue(store, [prediction("s1", "skip me", {"uav": 0.45})])
    item_id, review_id, version = _claim(store, "alice")
    with store.transaction() as session:
        skip_review(session, item_id, review_id, version, "alice", "not my field")
    assert _claim(store, "alice") is None  # a skipped item is not offered again to alice
    assert _claim(store, "bob")[0] == item_id


def test_double_review_disagreement_kappa_and_adjudication(store):
    items = [prediction(f"d{i}", f"double {i}", {"uav": 0.4}) for i in range(4)]
    enqueue(store, items, double_review_share=1.0)
    answers = {0: (["uav"], ["uav"]), 1: (["uav"], []), 2: ([], []), 3: (["uav"], ["uav"])}
    decided_by: dict[str, dict[int, int]] = {}
    for who, pick in (("alice", 0), ("bob", 1)):
        for _ in range(4):
            item_id, review_id, version = _claim(store, who)
            with store.session() as session:
                n = int(session.get(Item, item_id).external_id[1:])
            labels = answers[n][pick]
            with store.transaction() as session:
                submit_review(
                    session,
                    item_id,
                    review_id,
                    version,
                    who,
                    labels,
                    "controlled" if labels else "not_controlled",
                )
            decided_by.setdefault(who, {})[n] = item_id
    assert _claim(store, "alice") is None
    with store.session() as session:
        counts = count_by_status(session)
        assert counts == {"pending": 0, "in_review": 0, "decided": 3, "disagreement": 1}
        stats = admin_stats(session)
        uav = next(a for a in stats["agreement"]["per_label"] if a["label"] == "uav")
        assert stats["agreement"]["items"] == 4
        # pairs: (1,1) (1,0) (0,0) (1,1): p_o = .75, p_e = .75*.5 + .25*.5 = .5 -> kappa .5
        assert uav["kappa"] == pytest.approx(0.5)
        assert {r["reviewer"] for r in stats["throughput"]} == {"alice", "bob"}
    disputed = decided_by["alice"][1]
    with store.transaction() as session, pytest.raises(ForbiddenError):
        claim_item(session, disputed, "carol", is_admin=False)
    with store.transaction() as session:
        review = claim_item(session, disputed, "boss", is_admin=True)
        assert review.kind == "adjudication"
        submit_review(session, disputed, review.id, review.version, "boss", [], "not_controlled")
    with store.session() as session:
        assert session.get(Item, disputed).status == "decided"


def test_audit_events_cannot_be_changed_or_deleted(store):
    with store.transaction() as session:
        event = record_event(session, "tester", "test.event", after={"x": 1})
        event_id = event.id
    for sql in ("UPDATE audit_events SET actor = 'forged'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(sql))
    with pytest.raises(Exception, match="append-only"), store.transaction() as session:
        session.get(AuditEvent, event_id).actor = "forged via ORM"
    if not db.is_sqlite(str(store.engine.url)):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_events CASCADE"))
    with store.session() as session:
        [again] = list_events(session)
        assert (again.actor, again.action, again.after) == ("tester", "test.event", {"x": 1})


def test_export_round_trip_and_audit_csv(store, tmp_path, taxonomy):
    from serving.contract.readers import ColumnMapping, Row, read_records

    items = [
        prediction("x1", "Quadcopter flight controller", {"uav": 0.45}, "F7, GPS rescue"),
        prediction("x2", "Kitchen scale", {"uav": 0.3}, "5 kg"),
        prediction("x3", "Vague thing", {"marine": 0.4}),
        prediction("x4", "Left open", {"marine": 0.3}),
    ]
    enqueue(store, items)
    plan = {
        "x1": (["uav"], "controlled", '=HYPERLINK("http://evil")'),
        "x2": ([], "not_controlled", ""),
        "x3": ([], "needs_info", "no specs"),
    }
    for _ in plan:
        item_id, review_id, version = _claim(store, "alice")
        with store.session() as session:
            ext = session.get(Item, item_id).external_id
        if ext not in plan:
            with store.transaction() as session:
                skip_review(session, item_id, review_id, version, "alice")
            item_id, review_id, version = _claim(store, "alice")
            with store.session() as session:
                ext = session.get(Item, item_id).external_id
        labels, decision, note = plan[ext]
        with store.transaction() as session:
            submit_review(session, item_id, review_id, version, "alice", labels, decision, note)
    with store.transaction() as session:
        record_event(session, "=cmd|' /C calc'!A0", "login.fail", after={"client": "x"})
    out = tmp_path / "reviewed.jsonl"
    audit = tmp_path / "audit.csv"
    with store.session() as session:
        summary = export_reviews(session, out)
        audit_rows = export_audit_csv(session, audit)
    assert (summary.rows, summary.needs_info) == (2, 1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert by_id["x1"]["labels"] == ["uav"] and by_id["x2"]["labels"] == []
    assert by_id["x1"]["title"] == "Quadcopter flight controller"
    assert by_id["x1"]["description"] == "F7, GPS rescue"
    assert all(r["split"] == "train" and r["reviewer"] == "alice" for r in rows)
    assert all(r["model_version"] == "v1" and r["reviewed_at"] for r in rows)
    # The file reads back through the shared reader, labels checked against the taxonomy.
    read = [r for r in read_records(out, mapping=ColumnMapping(), taxonomy=taxonomy)]
    assert all(isinstance(r, Row) for r in read)
    assert {r.data["id"]: r.labels for r in read} == {"x1": ["uav"], "x2": []}
    csv_text = audit.read_text()
    assert audit_rows == csv_text.count("\n") - 1 or audit_rows > 0
    import csv

    cells = [cell for row in csv.reader(audit.open()) for cell in row]
    assert "'=cmd|' /C calc'!A0" in cells
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    csv_path = tmp_path / "reviewed.csv"
    with store.session() as session:
        export_reviews(session, csv_path)
    read_csv = [r for r in read_records(csv_path, mapping=ColumnMapping(), taxonomy=taxonomy)]
    assert {r.data["id"]: r.labels for r in read_csv} == {"x1": ["uav"], "x2": []}


def test_labels_known_to_the_store_are_the_taxonomy(store):
    enqueue(store, [prediction("k", "k", {"uav": 0.4})])
    from serving.review.stats import known_labels

    with store.session() as session:
        assert known_labels(session) == LABELS


def test_own_expired_claim_can_be_taken_again(store):
    enqueue(store, [prediction("o1", "coffee break", {"uav": 0.45})])
    with store.transaction() as session:
        first = claim_next(session, "alice", lease_s=30)
        item_id, first_id = first.item_id, first.id
    with store.transaction() as session:
        again = claim_item(session, item_id, "alice", now=later(60))
        assert again.id != first_id and again.status == "draft"
    with store.session() as session:
        statuses = [r.status for r in session.get(Item, item_id).reviews]
        assert statuses == ["discarded", "draft"]
