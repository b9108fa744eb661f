"""The bar that always shows the connection state."""
from __future__ import annotations

import time

from textual.content import Content
from textual.widgets import Static

from dim.client import session as S


def describe(state: str, node: str | None, user: str | None,
             reconnect_at: float | None, attempt: int, now: float | None = None) -> str:
    """The connection state in words, as the bar shows it."""
    who = f" as {user}" if user else ""
    if state == S.CONNECTED:
        return f"● connected to node {node}{who}"
    if state == S.RECONNECTING and reconnect_at is not None:
        left = reconnect_at - (time.monotonic() if now is None else now)
        if left >= 0.95:
            return f"↻ reconnecting in {round(left)} s (attempt {attempt})"
        if left > 0.05:  # the first retries come within a second: count down in tenths
            return f"↻ reconnecting in {left:.1f} s (attempt {attempt})"
        return f"↻ reconnecting (attempt {attempt})"
    if state == S.RECONNECTING:
        return f"↻ reconnecting (attempt {attempt})"
    if state == S.CONNECTING:
        return f"… connecting to node {node}" if node else "… connecting"
    return "○ offline"


class ConnectionBar(Static):
    """One line: the app's name and the connection state, updated by the app."""

    def on_mount(self) -> None:
        self.refresh_state()
        self.set_interval(0.1, self.refresh_state)

    def refresh_state(self) -> None:
        """Redraw from the app's current connection state."""
        app = self.app
        app_state = getattr(app, "connection_state", S.OFFLINE)
        text = describe(app_state,
                        getattr(app, "connection_node", None),
                        getattr(app, "connection_user", None),
                        getattr(app, "reconnect_at", None),
                        getattr(app, "reconnect_attempt", 0))
        self.plain = f"dim-chat  {text}"
        for state in (S.CONNECTED, S.CONNECTING, S.RECONNECTING, S.OFFLINE):
            self.set_class(state == app_state, f"-{state}")
        self.update(Content(self.plain))
