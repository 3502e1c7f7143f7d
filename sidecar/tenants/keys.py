"""API keys and the tenants they belong to: the only place a request's tenant is decided.

Keys are kept as SHA-256 digests (`hash_key`); a presented key is hashed and looked up, so neither the key table
nor a log line ever holds a key. Keys come from `api_keys` (`key:tenant,...`) and/or `api_keys_file` (one
`sha256:<hex> <tenant>` per line, `#` comments). With no keys at all the sidecar has one tenant, `default`, and may
bind only a loopback address (`check_exposure`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_TENANT = "default"
KEY_PREFIX = "msk-"


class KeyConfigError(ValueError):
    """The configured keys are unusable; the message names the entry at fault."""


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_tenant(tenant: str, where: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise KeyConfigError(f"{where}: tenant {tenant!r} must match {TENANT_PATTERN.pattern}")
    return tenant


@dataclass(frozen=True)
class KeyTable:
    """Hashed key -> tenant. Empty means authentication is off (single tenant, loopback only)."""

    tenants_by_hash: dict[str, str]

    @property
    def is_open(self) -> bool:
        return not self.tenants_by_hash

    @classmethod
    def load(cls, spec: str | None, keys_file: Path | None) -> "KeyTable":
        table: dict[str, str] = {}
        for position, entry in enumerate(filter(None, (part.strip() for part in (spec or "").split(",")))):
            key, separator, tenant = entry.rpartition(":")
            if not separator or not key:
                raise KeyConfigError(f"api_keys entry {position + 1} must look like `key:tenant`")
            table[hash_key(key)] = check_tenant(tenant, f"api_keys entry {position + 1}")
        if keys_file is not None:
            table.update(read_keys_file(keys_file))
        return cls(table)

    def tenant_of(self, key: str | None) -> str | None:
        """The tenant of a presented key; None when the key is unknown. Open tables map every caller to `default`."""
        if self.is_open:
            return DEFAULT_TENANT
        if not key:
            return None
        return self.tenants_by_hash.get(hash_key(key))


def read_keys_file(path: Path) -> dict[str, str]:
    """Hashed key -> tenant from a keys file."""
    if not path.is_file():
        raise KeyConfigError(f"api_keys_file {path} does not exist; create it with `memsidecar keys add`")
    table = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"sha256:[0-9a-f]{64}", parts[0]):
            raise KeyConfigError(f"{path}:{number}: expected `sha256:<64 hex digits> <tenant>`")
        table[parts[0]] = check_tenant(parts[1], f"{path}:{number}")
    return table


def add_key(path: Path, tenant: str) -> str:
    """Create a key for `tenant`, append its hash to the keys file and return the key (shown once, never stored)."""
    check_tenant(tenant, "tenant")
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.write(f"{hash_key(key)} {tenant}\n")
    path.chmod(0o600)
    return key


def check_exposure(table: KeyTable, host: str) -> None:
    """Refuse to serve a non-loopback address without API keys: every caller would share one tenant."""
    if table.is_open and not _is_loopback(host):
        raise KeyConfigError(
            f"no API keys are configured, so the sidecar only binds a loopback address, not {host!r}; "
            "set MEMSIDECAR_API_KEYS or --api-keys-file (see `memsidecar keys add`)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
