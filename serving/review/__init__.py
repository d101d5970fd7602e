"""Human review of uncertain items: store, queue, web UI, audit trail, export for training.

models.py   SQLAlchemy 2 tables: items, suggestions, reviews, audit_events, users
db.py       engines (SQLite WAL file or PostgreSQL) and Alembic migrations run from code
store.py    `ReviewStore`: one engine and its sessions
queue.py    everything the queue does (enqueue, order, claim with a lease, submit, skip) and the
            pure `item_status` function; handlers only load, authorize and call these
audit.py    the append-only audit log (insert and read; no update or delete path exists)
security.py password hashing, signed session cookies, CSRF tokens, the log-in rate limit
kappa.py    Cohen's kappa and agreement per label over double-reviewed items
stats.py    reviewer throughput, agreement and queue age for the admin page
similar.py  already-decided items most like a listing (TF-IDF cosine)
explain.py  the words that drove each label (occlusion, as `/v1/classify?explain=true`)
export.py   submitted reviews as a corpus-schema file, and an audit CSV safe to open in Excel
web.py      the `/review` pages and the `/v1/review/*` JSON endpoints
"""
