"""API keys: kept only as sha256 hashes, each with scopes; checked in constant time.

The key store and the authentication rule are shared by the classification API (scope checks in
`serving.api.deps`) and the review queue's JSON endpoints, so they live outside both.

`DUALSCREEN_API_KEYS` is a comma-separated list of `key` or `key:scope+scope`; a bare key gets the
`classify` scope. A keys file is JSON: `{"keys": [{"name": ..., "sha256": ..., "scopes": [...]}]}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serving.contract.errors import ConfigError
from serving.http_errors import ApiError

SCOPES = ("classify", "review", "admin")


@dataclass(frozen=True)
class ApiKey:
    """One key's hash, name and scopes."""

    name: str
    sha256: str
    scopes: frozenset[str]


def hash_key(key: str) -> str:
    """sha256 hex of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_env_keys(value: str) -> list[ApiKey]:
    """Parse `key[:scope+scope],...` into hashed keys."""
    keys = []
    for n, part in enumerate(p.strip() for p in value.split(",")):
        if not part:
            continue
        key, _, scope_text = part.partition(":")
        scopes = frozenset(s for s in scope_text.split("+") if s) or frozenset({"classify"})
        unknown = scopes - set(SCOPES)
        if unknown:
            raise ConfigError(
                f"DUALSCREEN_API_KEYS entry {n + 1}: unknown scope(s) "
                f"{', '.join(sorted(unknown))}; use {', '.join(SCOPES)}"
            )
        if len(key) < 16:
            raise ConfigError(f"DUALSCREEN_API_KEYS entry {n + 1}: keys need 16+ characters")
        keys.append(ApiKey(f"env-{n + 1}", hash_key(key), scopes))
    return keys


def load_keys_file(path: Path) -> list[ApiKey]:
    """Read hashed keys from a JSON keys file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [
            ApiKey(str(k["name"]), str(k["sha256"]), frozenset(k["scopes"])) for k in data["keys"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read keys file {path}: {exc}") from None


def create_key(path: Path, name: str, scopes: tuple[str, ...]) -> str:
    """Add a new random key to a keys file (created 0600) and return the key, shown once."""
    key = "ds_" + secrets.token_urlsafe(24)
    data: dict[str, list[dict[str, object]]] = {"keys": []}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    data["keys"].append({"name": name, "sha256": hash_key(key), "scopes": list(scopes)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


class KeyStore:
    """Looks up keys by hash."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def find(self, presented: str) -> ApiKey | None:
        """The key matching `presented`, compared in constant time over all keys."""
        digest = hash_key(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


def load_key_store(api_keys: str | None, keys_file: Path | None) -> KeyStore:
    """The keys of `DUALSCREEN_API_KEYS` and of the keys file, together."""
    keys = []
    if api_keys is not None:
        keys += parse_env_keys(api_keys)
    if keys_file is not None:
        keys += load_keys_file(keys_file)
    return KeyStore(keys)


DEVELOPMENT_KEY = ApiKey("development", "", frozenset(SCOPES))


def authenticate_key(
    keys: KeyStore, mode: Literal["production", "development"], key: str | None
) -> ApiKey | None:
    """The key store's entry for `key`, or None when the store does not know it.

    Development mode without any configured key admits everyone as DEVELOPMENT_KEY (all scopes);
    otherwise a request without a key is refused with 401. Shared by the classification API and
    the review API, which looks unknown keys up among its users' keys next.
    """
    if mode == "development" and not keys.keys:
        return DEVELOPMENT_KEY
    if not key:
        raise ApiError(
            401,
            "missing API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )
    return keys.find(key)
