"""The shared secret that signs tokens: ``DIM_SECRET``, or one kept in the data directory."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


#: The shortest secret accepted, in bytes: a short one can be found offline from one token.
MIN_SECRET_BYTES = 32


class SecretMissing(Exception):
    """A process that cannot make its own secret was started without ``DIM_SECRET``, or
    ``DIM_SECRET`` is too short to be safe."""


def check_strength(secret: bytes, source: str = "DIM_SECRET") -> bytes:
    """The secret, if it has at least :data:`MIN_SECRET_BYTES` bytes; SecretMissing with a
    message saying what to do otherwise."""
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretMissing(
            f"{source} is {len(secret)} bytes long; it must be at least {MIN_SECRET_BYTES} "
            "random bytes (for example the output of: python3 -c 'import secrets; "
            "print(secrets.token_hex(32))')")
    return secret


def from_environment() -> bytes | None:
    """The secret from ``DIM_SECRET``, if it is set and not empty; SecretMissing when it is
    shorter than :data:`MIN_SECRET_BYTES`."""
    value = os.environ.get("DIM_SECRET", "")
    return check_strength(value.encode("utf-8")) if value else None


def load_or_create(data_dir: Path) -> bytes:
    """``DIM_SECRET`` if set; otherwise the secret kept in ``data_dir``, made once (mode 0600)."""
    env = from_environment()
    if env is not None:
        return env
    path = data_dir / "secret"
    try:
        kept = path.read_bytes().strip()
    except FileNotFoundError:
        pass
    else:
        os.chmod(path, 0o600)
        return check_strength(kept, str(path))
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
