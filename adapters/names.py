"""The rules for adapter names, tenant ids and user ids, and the `name@vN` reference form.

Every check uses `re.fullmatch` (a `$` anchor would accept a trailing newline). Names and tenant ids never hold
NUL, "/" or "@", so they can be joined with those characters into unambiguous keys and references.
"""

from __future__ import annotations

import re

from adapters.errors import InvalidAdapterError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
USER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_REFERENCE = re.compile(r"(?P<name>[^@]+)@v(?P<version>[1-9][0-9]{0,8})")
# Route words under /v1/adapters: an adapter of that name could not be addressed there.
RESERVED_NAMES = frozenset({"jobs", "distill"})
_ALLOWED = "1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, without '..'"


def check_name(name: object, field: str = "name") -> str:
    """`name` if it is a valid adapter name (or tenant id: same rules); InvalidAdapterError naming `field`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidAdapterError(field, f"{name!r} is not a valid {field}: use {_ALLOWED}")
    if field == "name" and name.lower() in RESERVED_NAMES:
        raise InvalidAdapterError(field, f"{name!r} is reserved (an API route); choose another name")
    return name


def check_tenant(tenant: object) -> str:
    """A tenant id: the same rules as adapter names."""
    return check_name(tenant, "tenant")


def check_user(user: object) -> str:
    """A user id: 1 to 128 characters from A-Z a-z 0-9 . _ - @, starting with a letter or digit."""
    if not isinstance(user, str) or not USER_PATTERN.fullmatch(user) or ".." in user:
        raise InvalidAdapterError("user", f"{user!r} is not a valid user id: use 1 to 128 characters from "
                                          "A-Z a-z 0-9 . _ - @, starting with a letter or digit, without '..'")
    return user


def parse_reference(reference: str) -> tuple[str, int | None]:
    """(name, version) of "name" (version None: the latest) or "name@vN"."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return check_name(reference), None
    return check_name(match["name"]), int(match["version"])
