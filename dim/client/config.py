"""Where the terminal chat remembers things between runs.

:class:`ClientConfig` keeps the last gateway and user in ``config.json`` under the XDG config
directory, and login tokens in ``tokens.json`` under the XDG state directory, written with
mode 0600 because a token is as good as a password until it expires.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import platformdirs

APP_NAME = "dim-chat"
DEFAULT_GATEWAY = "http://127.0.0.1:8080"


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _write_json(path: str, obj: dict[str, Any], mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)


class ClientConfig:
    """The chat's remembered settings (last gateway and user) and saved tokens."""

    def __init__(self, config_dir: str | None = None, state_dir: str | None = None) -> None:
        self.config_dir = config_dir or platformdirs.user_config_dir(APP_NAME)
        self.state_dir = state_dir or platformdirs.user_state_dir(APP_NAME)
        self.config_path = os.path.join(self.config_dir, "config.json")
        self.token_path = os.path.join(self.state_dir, "tokens.json")

    # ------------------------------------------------------------ settings

    def load(self) -> dict[str, Any]:
        """The saved settings (``gateway``, ``user``), empty if none."""
        return _read_json(self.config_path)

    @property
    def gateway(self) -> str:
        """The last gateway used, or the embedded ``dim``'s default."""
        return self.load().get("gateway") or DEFAULT_GATEWAY

    @property
    def user(self) -> str | None:
        """The last user who logged in, if any."""
        return self.load().get("user")

    def remember(self, gateway: str, user: str) -> None:
        """Save the gateway and user of a successful login."""
        obj = self.load()
        obj.update(gateway=gateway, user=user)
        _write_json(self.config_path, obj, 0o644)

    # ------------------------------------------------------------ tokens

    def token(self, gateway: str, user: str, now: float | None = None) -> str | None:
        """The saved token of ``user`` at ``gateway``, unless it has expired."""
        entry = _read_json(self.token_path).get(f"{user}@{gateway}")
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        expires = entry.get("expires")
        now = time.time() if now is None else now
        if isinstance(expires, (int, float)) and expires and _as_seconds(expires) <= now:
            return None
        return entry["token"]

    def save_token(self, gateway: str, user: str, token: str, expires: Any = None) -> None:
        """Keep a token (mode 0600) so the next start needs no password."""
        tokens = _read_json(self.token_path)
        tokens[f"{user}@{gateway}"] = {"token": token, "expires": expires}
        _write_json(self.token_path, tokens, 0o600)

    def forget_token(self, gateway: str, user: str) -> None:
        """Drop a saved token (after logout, or when the gateway rejects it)."""
        tokens = _read_json(self.token_path)
        if tokens.pop(f"{user}@{gateway}", None) is not None:
            _write_json(self.token_path, tokens, 0o600)


def _as_seconds(expires: float) -> float:
    """``expires`` in seconds, whether the gateway gave seconds or milliseconds."""
    return expires / 1000.0 if expires > 1e11 else float(expires)
