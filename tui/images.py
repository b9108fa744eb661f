"""Pictures in the terminal through textual-image, where this terminal allows it.

textual-image asks the terminal about its graphics and cell size when first imported, which
only works before Textual takes the terminal over, and fails outright on a terminal that
reports no size.  :func:`prepare` is called once before the app starts; afterwards
:func:`image_class` says which widget to use, or None, and the chat falls back to text.
"""
from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Any
from collections.abc import Mapping

_prepared: dict[str, Any] = {}

#: The most pixels a picture may have to be drawn (as the gateway allows for uploads): a
#: small file can claim a huge image (a decompression bomb), whose decoding would take
#: gigabytes; such a picture is shown as text instead.
MAX_PIXELS = 40_000_000


def in_multiplexer(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the terminal is tmux or screen, which take the Kitty graphics query (an APC
    sequence, ``ESC _ G ... ESC \\``) for a window title and show it there."""
    env = os.environ if environ is None else environ
    term = env.get("TERM", "")
    return bool(env.get("TMUX")) or term.startswith(("screen", "tmux"))


def prepare(environ: Mapping[str, str] | None = None) -> bool:
    """Import textual-image while the terminal can still be asked; False if it cannot work.

    Inside tmux or screen the terminal is not probed for graphics at all (the Kitty graphics
    probe would become the pane's title): pictures are drawn in coloured half cells.
    """
    if "image" not in _prepared:
        try:
            if in_multiplexer(environ):
                # textual-image probes when its renderable package is imported, only if
                # stdout is a terminal: import it while stdout reads as none.
                real, sys.__stdout__ = sys.__stdout__, None  # type: ignore[misc]
                try:
                    import_module("textual_image.renderable")
                finally:
                    sys.__stdout__ = real  # type: ignore[misc]
                _prepared["image"] = import_module("textual_image.widget").HalfcellImage
            else:
                _prepared["image"] = import_module("textual_image.widget").Image
        except Exception:  # no size, no terminal, no Pillow: pictures are off
            _prepared["image"] = None
    return _prepared["image"] is not None


def too_large(path: str, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why the picture at ``path`` must not be decoded (its header claims more than
    ``max_pixels`` pixels, or it cannot be read), or None when it may be shown.  Only the
    header is read."""
    try:
        from PIL import Image
    except ImportError:
        return "pictures need Pillow"
    try:
        with Image.open(path) as picture:
            width, height = picture.size
    except Image.DecompressionBombError:
        return f"it claims more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels"
    except Exception as e:  # not a picture Pillow knows, or no Pillow: never decode it
        return f"it cannot be read as a picture ({type(e).__name__})"
    if width * height > max_pixels:
        return f"it is {width}x{height} pixels, more than {max_pixels:,} are never decoded"
    return None


def image_class() -> Any:
    """textual-image's Image widget class, or None where pictures cannot be shown."""
    if "image" not in _prepared:
        prepare()
    return _prepared["image"]
