"""Opaque page tokens for List calls (keyset paging by name)."""

from __future__ import annotations

import base64
import binascii

from convergent.server.errors import InvalidInput
from convergent.server.records import Page

_PREFIX = "v1:"


def encode_token(last_name: str) -> str:
    return base64.urlsafe_b64encode((_PREFIX + last_name).encode()).decode()


def decode_token(token: str) -> str:
    """The name after which the page starts ("" for the first page)."""
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_PREFIX):
        raise InvalidInput("page_token is not a token this server issued", reason="INVALID_PAGE_TOKEN", field="page_token")
    return text[len(_PREFIX):]


def make_page(items: list, limit: int, key: str = "name") -> Page:
    """The first ``limit`` of ``items`` (read with limit + 1) and the token of the next page."""
    more = len(items) > limit
    items = items[:limit]
    return Page(items=tuple(items), next_token=encode_token(getattr(items[-1], key)) if more else "")


def page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidInput("page_size must be >= 0", reason="VALUE_OUT_OF_RANGE", field="page_size")
    return min(requested or default, maximum)
