"""Checks of the fields of gateway requests: query arguments, names and short texts.

Each check returns the clean value or raises :class:`dim.errors.BadRequest` naming the field.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from twisted.web.iweb import IRequest

from dim.errors import BadRequest

#: A valid user name: 1-32 of A-Z a-z 0-9 _ . -
USER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def query_int(request: IRequest, name: str, default: int) -> int:
    """An integer query argument, or ``default`` when absent; BadRequest when not a number."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    raw = values[0].decode("utf-8", "replace").strip()
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise BadRequest(f"{name} must be an integer")
    return int(raw)


def query_text(request: IRequest, name: str) -> str | None:
    """A query argument as text (None when absent); BadRequest when it is not UTF-8."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} must be UTF-8 text") from None


def has_control(text: str) -> bool:
    """Whether the text holds a control character (newline, NUL, escape...)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def text_field(value: Any, name: str, low: int, high: int) -> str:
    """A text of ``low``-``high`` characters without control characters (a name must also
    hold something other than spaces)."""
    if not isinstance(value, str) or not low <= len(value) <= high or has_control(value):
        raise BadRequest(f"{name} must be text of {low}-{high} characters "
                         "without control characters")
    if low > 0 and not value.strip():
        raise BadRequest(f"{name} must not be only spaces")
    return value


def user_list(value: Any, name: str) -> list[str]:
    """A list of user names (strings); BadRequest otherwise.  Names are not checked here:
    one nobody could register is simply unknown (404)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name} must be a list of user names")
    return value
