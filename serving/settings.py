"""Serving settings: every field settable as an environment variable prefixed `DUALSCREEN_`.

Production (the default) refuses to start without API keys, or with a short or well-known session
secret for the review UI; development may run without them and says so loudly at start-up. Secrets
(keys, session secret, database URL) are `SecretStr` and are redacted when settings are logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.contract.decide import parse_review_budget, parse_review_ceiling
from serving.contract.errors import DualscreenError

_WEAK_SECRETS = {"changeme", "changethis", "secret", "password", "development", "dev"}


class Settings(BaseSettings):
    """Settings of the service process: the API, the review queue and its UI."""

    model_config = SettingsConfigDict(
        env_prefix="DUALSCREEN_", extra="ignore", protected_namespaces=()
    )

    mode: Literal["production", "development"] = "production"
    model: str = "models/dualscreen"
    model_cache_dir: Path | None = None
    backend: Literal["onnx-int8", "onnx-int8-fast", "onnx", "torch", "tfidf", "cascade"] | None = (
        None
    )
    # Inference threads per process (0: the usable cores divided among the workers).
    threads: int = Field(default=0, ge=0)
    # Server processes, each with its own event loop and copy of the model (`serve --workers`).
    workers: int = Field(default=1, ge=1)
    # "default" keeps the model's review budget; "none" lifts it; a number sets it (see
    # serving.contract.decide.parse_review_budget). Applied without retraining.
    review_budget: str = "default"
    # "default" keeps the model's review ceiling; a probability picks the model's stored review
    # search at that ceiling (serving.contract.decide.parse_review_ceiling).
    review_ceiling: str = "default"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    api_keys: SecretStr | None = None
    keys_file: Path | None = None

    max_items: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_field_chars: int = Field(default=100_000, ge=100)
    batch_max_size: int = Field(default=64, ge=1)
    batch_max_wait_ms: float = Field(default=4.0, ge=0.0)
    queue_max_items: int = Field(default=2048, ge=1)
    request_timeout_s: float = Field(default=10.0, gt=0.0)
    retry_after_s: int = Field(default=1, ge=1)
    explain_max_words: int = Field(default=48, ge=1)

    # Review queue and its web UI (serving/review)
    database_url: SecretStr | None = Field(
        default=None, description="review store URL; default sqlite file var/review.db"
    )
    database_auto_migrate: bool = True
    session_secret: SecretStr | None = None
    session_secret_file: Path | None = None
    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    claim_lease_s: int = Field(default=900, ge=10)
    double_review_share: float = Field(default=0.0, ge=0.0, le=1.0)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_s: int = Field(default=300, ge=1)

    @field_validator("review_budget", "review_ceiling")
    @classmethod
    def _review_setting(cls, value: str, info: ValidationInfo) -> str:
        parse = parse_review_budget if info.field_name == "review_budget" else parse_review_ceiling
        try:
            parse(value)
        except DualscreenError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _cores(self) -> Settings:
        cores = usable_cores()
        if self.workers > cores:
            raise ValueError(
                f"workers={self.workers} but only {cores} CPU cores are usable: each worker "
                f"runs the model on a core of its own, so more workers than cores only adds "
                f"contention (set DUALSCREEN_WORKERS or --workers to at most {cores})"
            )
        if self.workers > 1 and self.threads * self.workers > cores:
            raise ValueError(
                f"threads={self.threads} x workers={self.workers} = "
                f"{self.threads * self.workers} inference threads for {cores} CPU cores: set "
                f"threads to at most {cores // self.workers}, or 0 to divide the cores among "
                f"the workers"
            )
        return self

    def threads_per_worker(self) -> int:
        """Inference threads for each process: `threads`, or the cores shared among workers."""
        if self.threads:
            return self.threads
        return 0 if self.workers == 1 else max(1, usable_cores() // self.workers)

    @model_validator(mode="after")
    def _secure_defaults(self) -> Settings:
        if self.mode == "production" and not self.api_keys and not self.keys_file:
            raise ValueError(
                "production mode needs API keys: set DUALSCREEN_API_KEYS or DUALSCREEN_KEYS_FILE "
                "(or DUALSCREEN_MODE=development for a local, unauthenticated trial)"
            )
        if self.mode == "production" and self.session_secret is not None:
            secret = self.session_secret.get_secret_value()
            if len(secret) < 32 or secret.lower() in _WEAK_SECRETS:
                raise ValueError(
                    "DUALSCREEN_SESSION_SECRET must be a random string of 32+ characters "
                    "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        return self

    def redacted(self) -> dict[str, object]:
        """Settings for the start-up log, secrets replaced."""
        data = self.model_dump(mode="json")
        if self.api_keys is not None:
            data["api_keys"] = "**********"
        if self.session_secret is not None:
            data["session_secret"] = "**********"
        if self.database_url is not None:
            scheme = self.database_url.get_secret_value().partition(":")[0]
            data["database_url"] = f"{scheme}:**********"
        return data


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
