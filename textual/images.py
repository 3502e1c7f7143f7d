"""Checking the image an image memory points at. Pure.

An image is referenced from `metadata["image_url"]`: either an http(s) URL with a host (at most
`MAX_URL_CHARS` characters; not fetched) or a `data:image/<png|jpeg|gif|webp>;base64,...` URL whose decoded bytes
are at most the store's limit. The memory's content is the caption, which is what search finds it by.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from memcore.units import MIB
from textual.errors import InvalidMemoryError

DEFAULT_MAX_IMAGE_BYTES = 5 * MIB
MAX_URL_CHARS = 2_048
DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/=\s]*)$")


def check_image_url(url: object, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> str:
    """`url` if it is an acceptable image reference by the rules above, else InvalidMemoryError("image_url")."""
    if not isinstance(url, str) or not url:
        raise InvalidMemoryError("image_url", "must be an http(s) URL or a data:image/...;base64 URL")
    if url.startswith("data:"):
        _check_data_url(url, max_bytes)
        return url
    if len(url) > MAX_URL_CHARS:
        raise InvalidMemoryError("image_url", f"is {len(url)} characters, the limit is {MAX_URL_CHARS}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidMemoryError("image_url", f"scheme must be http, https or data, got {parts.scheme or 'none'!r}")
    return url


def _check_data_url(url: str, max_bytes: int) -> None:
    match = DATA_URL.match(url)
    if match is None:
        raise InvalidMemoryError("image_url", "a data URL must be data:image/<png|jpeg|gif|webp>;base64,<data>")
    payload = match.group(2)
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InvalidMemoryError("image_url", f"image is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMemoryError("image_url", "data URL payload is not valid base64") from None
    if not data:
        raise InvalidMemoryError("image_url", "data URL holds no image bytes")
    if len(data) > max_bytes:
        raise InvalidMemoryError("image_url", f"image is {len(data)} bytes, the limit is {max_bytes}")
