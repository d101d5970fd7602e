"""Serving settings: every field settable as an environment variable prefixed `DUALSCREEN_`.

Production (the default) refuses to start without API keys; development may run without them and
says so loudly at start-up. Secrets are `SecretStr` and are redacted when settings are logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of the API process."""

    model_config = SettingsConfigDict(
        env_prefix="DUALSCREEN_", extra="ignore", protected_namespaces=()
    )

    mode: Literal["production", "development"] = "production"
    model: str = "models/dualscreen"
    model_cache_dir: Path | None = None
    backend: Literal["onnx-int8", "onnx", "torch", "tfidf"] | None = None
    threads: int = Field(default=0, ge=0)
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

    @model_validator(mode="after")
    def _secure_defaults(self) -> Settings:
        if self.mode == "production" and not self.api_keys and not self.keys_file:
            raise ValueError(
                "production mode needs API keys: set DUALSCREEN_API_KEYS or DUALSCREEN_KEYS_FILE "
                "(or DUALSCREEN_MODE=development for a local, unauthenticated trial)"
            )
        return self

    def redacted(self) -> dict[str, object]:
        """Settings for the start-up log, secrets replaced."""
        data = self.model_dump(mode="json")
        if self.api_keys is not None:
            data["api_keys"] = "**********"
        return data
