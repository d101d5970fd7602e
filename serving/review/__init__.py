"""Human review of uncertain items: store, queue, web UI, audit trail, export for training.

models.py    SQLAlchemy 2 tables: items, suggestions, reviews, audit_events, users
db.py        engines (SQLite WAL file or PostgreSQL) and Alembic migrations run from code
store.py     `ReviewStore`: one engine and its sessions
errors.py    the queue's errors (`ReviewError` and its subclasses, with their HTTP status)
rules.py     the pure rules: `item_status`, ranking (margin, entropy), item identity, answers
intake.py    the one way listings enter the queue: `IntakePolicy` (which decisions, the item key,
             what is stored) and `enqueue_listings`, called by the API, `score` and `import`
enqueue.py   the queue write behind the intake: idempotent by listing and model version
queue.py     reads (filters, order, counts) and mutations (claim with a lease, submit, skip)
views.py     items, suggestions and reviews as JSON-ready data
audit.py     the append-only audit log (insert and read; no update or delete path exists)
security.py  password hashing, signed session cookies, CSRF tokens, the log-in rate limit
users.py     review users: create, authenticate by password or API key, list
kappa.py     Cohen's kappa and agreement per label over double-reviewed items
stats.py     reviewer throughput, agreement and queue age for the admin page
similar.py   already-decided items most like a listing (TF-IDF cosine)
explain.py   highlighting the words that drove each label (words from `serving.explain`)
export.py    submitted reviews as a corpus-schema file, and an audit CSV safe to open in Excel
service.py   `ReviewService`: store, signer, limiter, caches and templates of one process
sessions.py  log-in, sessions, CSRF and page rendering
pages.py     the `/review` pages
json_api.py  the `/v1/review/*` JSON endpoints
web.py       `install_review`: mounts the routers and error handlers (called by `serving.app`)
"""
