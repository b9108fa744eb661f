"""Token and password fixtures: the test secret, tiny Argon2 parameters, inline pool and reactor."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from dim.passwords import PasswordHasher

SECRET = b"test-secret-of-at-least-32-bytes!!"


#: Argon2 parameters small enough for unit tests to hash in well under a millisecond.
FAST_ARGON2: dict[str, int] = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


class InlineReactor:
    """The ``callFromThread`` part of a reactor, calling at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def fast_hasher() -> tuple[PasswordHasher, InlinePool]:
    """A PasswordHasher with tiny Argon2 parameters working inline, and its pool."""
    pool = InlinePool()
    return PasswordHasher(pool, InlineReactor(), **FAST_ARGON2), pool  # type: ignore[arg-type]


class InlinePool:
    """A thread pool that runs every call at once on the calling thread, recording it."""

    def __init__(self) -> None:
        self.calls: list[Callable[..., Any]] = []

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None],
                                 f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls.append(f)
        try:
            result = f(*args, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)
