"""API keys: kept only as sha256 hashes, each with scopes; checked in constant time.

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

from serving.contract.errors import ConfigError

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
