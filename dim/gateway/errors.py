"""How a :class:`dim.errors.DimError` looks over HTTP: the one shape of every error answer."""
from __future__ import annotations

from typing import Any

import msgspec

from dim.errors import DimError


def error_document(code: str, message: str) -> dict[str, Any]:
    """The contract's error body: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


def error_json(error: DimError) -> bytes:
    """A DIM error's HTTP body, encoded."""
    return msgspec.json.encode(error_document(error.code, error.message))
