"""The bar that always shows the connection state."""
from __future__ import annotations

import time

from textual.content import Content
from textual.timer import Timer
from textual.widgets import Static

from dim.client import events as E


def describe(state: str, node: str | None, user: str | None,
             reconnect_at: float | None, attempt: int, now: float | None = None) -> str:
    """The connection state in words, as the bar shows it."""
    who = f" as {user}" if user else ""
    if state == E.CONNECTED:
        return f"● connected to node {node}{who}"
    if state == E.RECONNECTING and reconnect_at is not None:
        left = reconnect_at - (time.monotonic() if now is None else now)
        if left >= 0.95:
            return f"↻ reconnecting in {round(left)} s (attempt {attempt})"
        if left > 0.05:  # the first retries come within a second: count down in tenths
            return f"↻ reconnecting in {left:.1f} s (attempt {attempt})"
        return f"↻ reconnecting (attempt {attempt})"
    if state == E.RECONNECTING:
        return f"↻ reconnecting (attempt {attempt})"
    if state == E.CONNECTING:
        return f"… connecting to node {node}" if node else "… connecting"
    return "○ offline"


#: How often the reconnect countdown is redrawn while it runs (and only then).
COUNTDOWN_TICK = 0.1


class ConnectionBar(Static):
    """One line: the app's name, the connection state and the activity list, updated by the
    app.  A timer runs only while a reconnect countdown is shown, so an idle connected chat
    wakes for nothing."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.plain = ""
        #: Conversations with activity, weechat's hotlist: ``[(number, name, unread, mention)]``.
        self.hotlist: list[tuple[int, str, int, bool]] = []
        self._ticker: Timer | None = None

    def on_mount(self) -> None:
        self.refresh_state()

    def on_unmount(self) -> None:
        self._stop_ticking()

    def _stop_ticking(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    @property
    def ticking(self) -> bool:
        """Whether the countdown timer runs."""
        return self._ticker is not None

    def set_hotlist(self, hotlist: list[tuple[int, str, int, bool]]) -> None:
        """Show which conversations have unread messages (and mentions)."""
        if hotlist != self.hotlist:
            self.hotlist = hotlist
            self.refresh_state()

    def hotlist_text(self) -> str:
        """The activity list in words: ``Act: 1:carol(2) 3:!#team(1)``."""
        if not self.hotlist:
            return ""
        items = [f"{n}:{'!' if mention else ''}{name}({unread})"
                 for n, name, unread, mention in self.hotlist]
        return "Act: " + " ".join(items)

    def refresh_state(self) -> None:
        """Redraw from the app's current connection state."""
        app = self.app
        app_state = getattr(app, "connection_state", E.OFFLINE)
        reconnect_at = getattr(app, "reconnect_at", None)
        text = describe(app_state,
                        getattr(app, "connection_node", None),
                        getattr(app, "connection_user", None),
                        reconnect_at,
                        getattr(app, "reconnect_attempt", 0))
        counting = app_state == E.RECONNECTING and reconnect_at is not None \
            and reconnect_at > time.monotonic()
        if app_state == E.RECONNECTING:
            text += "  (F5 reconnects now)"
        if counting and self._ticker is None:
            self._ticker = self.set_interval(COUNTDOWN_TICK, self.refresh_state)
        elif not counting:
            self._stop_ticking()
        hot = self.hotlist_text()
        self.plain = f"dim-chat  {text}" + (f"  {hot}" if hot else "")
        for state in (E.CONNECTED, E.CONNECTING, E.RECONNECTING, E.OFFLINE):
            self.set_class(state == app_state, f"-{state}")
        parts: list[object] = [f"dim-chat  {text}"]
        if hot:
            parts += ["  ", (hot, "bold")]
        self.update(Content.assemble(*parts))  # type: ignore[arg-type]
