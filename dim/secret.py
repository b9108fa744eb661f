"""The shared secret that signs tokens: ``DIM_SECRET``, or one kept in the data directory."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


class SecretMissing(Exception):
    """A process that cannot make its own secret was started without ``DIM_SECRET``."""


def from_environment() -> bytes | None:
    """The secret from ``DIM_SECRET``, if it is set and not empty."""
    value = os.environ.get("DIM_SECRET", "")
    return value.encode("utf-8") if value else None


def load_or_create(data_dir: Path) -> bytes:
    """``DIM_SECRET`` if set; otherwise the secret kept in ``data_dir``, made once (mode 0600)."""
    env = from_environment()
    if env is not None:
        return env
    path = data_dir / "secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_hex(32).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(value + b"\n")
    return value


def required() -> bytes:
    """``DIM_SECRET`` for cluster processes, which must all share it."""
    env = from_environment()
    if env is None:
        raise SecretMissing("set DIM_SECRET to the same secret on every gateway and node")
    return env
