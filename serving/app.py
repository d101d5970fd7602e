"""The service's app: the classification API with the review queue mounted on it.

The one place that knows both `serving.api` and `serving.review` (neither imports the other): it
builds the API, creates the review service on the API's settings, key store and loaded model,
mounts the review pages and JSON endpoints, and connects `/v1/classify?enqueue=true` to the
review intake.
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.api.app import create_api_app
from serving.api.deps import AppState
from serving.predictor import Predictor
from serving.review.service import ReviewService
from serving.review.web import install_review
from serving.settings import Settings


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> FastAPI:
    """Build the service: the API and the review queue.

    Args:
        settings: defaults to `Settings()` from the environment.
        predictor: a loaded predictor (tests); otherwise `settings.model` loads in the lifespan.
    """
    app = create_api_app(settings, predictor)
    state: AppState = app.state.dualscreen
    review = ReviewService(
        state.settings, state.keys, lambda: state.predictor if state.ready else None
    )
    install_review(app, review)
    state.review_intake = review.enqueue_classified
    state.on_shutdown.append(review.close)
    return app
