"""dim-chat decodes no picture past its pixel limit: a small file claiming a huge image (a
decompression bomb) is shown as text, in the image dialog and as an avatar."""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from twisted.trial import unittest

from tests.fakes.client import png
from tests.fakes.tui import async_test
from tui import images


def bomb_header(width: int, height: int) -> bytes:
    """A small PNG claiming ``width`` x ``height`` pixels (its header says so; its data is a
    few rows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # A few compressed rows: a real bomb's whole body compresses to kilobytes.
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1) * 4)) + chunk(b"IEND", b""))


class PixelLimitTests(unittest.TestCase):
    """too_large reads only the header and refuses what is over the limit."""

    def write(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_small_picture_allowed(self) -> None:
        """An 8x8 picture may be shown."""
        self.assertIsNone(images.too_large(self.write(png(8, 8))))

    def test_huge_claim_refused(self) -> None:
        """A 9000x9000 claim (81 megapixels) is refused, with its size in the reason."""
        reason = images.too_large(self.write(bomb_header(9000, 9000)))
        self.assertIsNotNone(reason)
        self.assertIn("9000x9000", reason)

    def test_limit_is_a_parameter(self) -> None:
        """The limit applies at its edge: 64 pixels pass a 64 limit, not a 63 one."""
        path = self.write(png(8, 8))
        self.assertIsNone(images.too_large(path, max_pixels=64))
        self.assertIsNotNone(images.too_large(path, max_pixels=63))

    def test_not_a_picture_refused(self) -> None:
        """Bytes Pillow cannot read as a picture are never handed to a decoder."""
        self.assertIn("cannot be read", images.too_large(self.write(b"not a picture")))

    @async_test
    async def test_dialog_shows_text_for_a_bomb(self) -> None:
        """The image dialog shows why a bomb is not drawn, and draws no image widget."""
        from textual.app import App
        from textual.widgets import Label

        from tui.screens.image import ImageScreen

        made: list[Any] = []

        class Picture(Label):
            def __init__(self, path: str, **kw: Any) -> None:
                made.append(path)
                super().__init__("picture", **kw)

        self.patch(images, "_prepared", {"image": Picture})
        bomb = self.write(bomb_header(9000, 9000))
        small = self.write(png(8, 8))

        class Viewer(App[None]):
            pass

        app = Viewer()
        async with app.run_test() as pilot:
            await app.push_screen(ImageScreen(bomb, "bomb.png"))
            await pilot.pause()
            texts = [str(label.render()) for label in app.screen.query(Label)]
            self.assertTrue(any("Not shown" in t and "9000x9000" in t for t in texts), texts)
            self.assertEqual(made, [])
            app.pop_screen()
            await app.push_screen(ImageScreen(small, "small.png"))
            await pilot.pause()
            self.assertEqual(made, [small])
