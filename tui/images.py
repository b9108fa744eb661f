"""Pictures in the terminal through textual-image, where this terminal allows it.

textual-image asks the terminal about its graphics and cell size when first imported, which
only works before Textual takes the terminal over, and fails outright on a terminal that
reports no size.  :func:`prepare` is called once before the app starts; afterwards
:func:`image_class` says which widget to use, or None, and the chat falls back to text.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_prepared: dict[str, Any] = {}


def prepare() -> bool:
    """Import textual-image while the terminal can still be asked; False if it cannot work."""
    if "image" not in _prepared:
        try:
            _prepared["image"] = import_module("textual_image.widget").Image
        except Exception:  # no size, no terminal, no Pillow: pictures are off
            _prepared["image"] = None
    return _prepared["image"] is not None


def image_class() -> Any:
    """textual-image's Image widget class, or None where pictures cannot be shown."""
    if "image" not in _prepared:
        prepare()
    return _prepared["image"]
