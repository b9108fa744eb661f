"""dim-chat: DIM's terminal chat, a Textual app driven by the client core in dim.client.

Nothing imported here may import the Twisted reactor: ``tui.__main__`` installs the asyncio
reactor first.
"""
from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


async def wait_for(d: Deferred[T] | Any) -> T:
    """Await a Deferred (or a plain value) from Textual code on the shared asyncio loop."""
    if not isinstance(d, Deferred):
        return d
    return await d.asFuture(asyncio.get_running_loop())
