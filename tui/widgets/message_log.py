"""The open conversation: messages with times, senders and marks on one's own messages."""
from __future__ import annotations

import time
from dataclasses import dataclass

from textual import events
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from dim.client import session as S
from dim.client.cache import ChatMessage

MARKS = {
    S.SENDING: "… sending",
    S.SENT: "✓ sent",
    S.DELIVERED: "✓✓ delivered",
    S.FAILED: "✗ failed (ctrl+r retries)",
}


def clock_time(ts_ms: int) -> str:
    """A message time as the log shows it: HH:MM, with the date if not today."""
    t = time.localtime(ts_ms / 1000)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


class MessageRow(Static):
    """One message: time, sender, body and, for one's own, its state."""

    def __init__(self, *, seq: int | None, id: str, mid: str | None, sender: str, ts: int,
                 body: str, own: bool, state: str | None) -> None:
        self.seq, self.message_id, self.mid = seq, id, mid
        self.sender, self.ts, self.body, self.own, self.state = sender, ts, body, own, state
        super().__init__(classes="-own" if own else "")
        self.plain = ""
        self._render_text()

    def _render_text(self) -> None:
        body = self.body.replace("\n", "\n      ")
        mark = f"  {MARKS[self.state]}" if self.own and self.state in MARKS else ""
        self.plain = f"{clock_time(self.ts)} {self.sender}: {body}{mark}"
        self.set_class(self.state == S.FAILED, "-failed")
        self.update(Content(self.plain))

    def set_state(self, state: str, *, seq: int | None = None, mid: str | None = None,
                  ts: int | None = None) -> None:
        """Show a new state of one's own message."""
        if self.state == S.DELIVERED and state != S.DELIVERED:
            return
        self.state = state
        self.seq = seq if seq is not None else self.seq
        self.mid = mid if mid is not None else self.mid
        self.ts = ts if ts is not None else self.ts
        self._render_text()


class MessageLog(VerticalScroll):
    """The messages of one conversation, oldest at the top; each seq appears once."""

    @dataclass
    class OlderWanted(Message):
        """The person scrolled up past the oldest message shown."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.me = ""
        self.by_seq: dict[int, MessageRow] = {}
        self.by_id: dict[str, MessageRow] = {}

    async def reset(self, me: str) -> None:
        """Empty the log for a newly opened conversation."""
        self.me = me
        self.by_seq.clear()
        self.by_id.clear()
        await self.remove_children()

    @property
    def oldest_seq(self) -> int | None:
        """The lowest seq shown, where older history continues."""
        return min(self.by_seq) if self.by_seq else None

    def _row_for_message(self, m: ChatMessage) -> MessageRow:
        own = m.sender == self.me
        state = (S.DELIVERED if m.delivered else S.SENT) if own else None
        return MessageRow(seq=m.seq, id=m.id, mid=m.mid, sender=m.sender, ts=m.ts, body=m.body,
                          own=own, state=state)

    def _remember(self, row: MessageRow) -> None:
        if row.seq is not None:
            self.by_seq[row.seq] = row
        if row.own:
            self.by_id[row.message_id] = row

    async def add_message(self, m: ChatMessage) -> None:
        """Show an inbox message at its place by seq (once)."""
        if m.seq in self.by_seq:
            return
        if m.sender == self.me and m.id in self.by_id:
            row = self.by_id[m.id]
            row.set_state(S.DELIVERED if m.delivered else S.SENT, seq=m.seq, mid=m.mid, ts=m.ts)
            self.by_seq[m.seq] = row
            return
        row = self._row_for_message(m)
        self._remember(row)
        later = [r for r in self.query(MessageRow) if r.seq is not None and r.seq > m.seq]
        at_bottom = self.is_vertical_scroll_end or self.max_scroll_y == 0
        if later:
            await self.mount(row, before=later[0])
        else:
            pending = [r for r in self.query(MessageRow) if r.seq is None]
            await self.mount(row, before=pending[0] if pending else None)
        if at_bottom and not later:
            self.scroll_end(animate=False)

    async def add_older(self, messages: list[ChatMessage]) -> None:
        """Prepend older history (oldest first) above what is shown."""
        fresh = [m for m in messages if m.seq not in self.by_seq]
        rows = [self._row_for_message(m) for m in fresh]
        for row in rows:
            self._remember(row)
        if rows:
            shown = self.query(MessageRow)
            if shown:
                await self.mount_all(rows, before=shown.first())
            else:
                await self.mount_all(rows)

    async def add_outgoing(self, out: S.OutgoingMessage, me: str) -> None:
        """Show (or update) one's own message sent from here."""
        row = self.by_id.get(out.id)
        if row is not None:
            row.set_state(out.state, seq=out.seq, mid=out.mid, ts=out.ts)
            if out.seq is not None:
                self.by_seq[out.seq] = row
            return
        if out.seq is not None and out.seq in self.by_seq:
            return
        row = MessageRow(seq=out.seq, id=out.id, mid=out.mid, sender=me, ts=out.ts or out.created,
                         body=out.body, own=True, state=out.state)
        self._remember(row)
        await self.mount(row)
        self.scroll_end(animate=False)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0 and self.by_seq:
            self.post_message(self.OlderWanted())

    def mark_delivered(self, mid: str) -> None:
        """Mark one's own message ``mid`` delivered (it may have been sent from another device)."""
        for row in self.by_id.values():
            if row.mid == mid:
                row.set_state(S.DELIVERED)

    def failed_ids(self) -> list[str]:
        """Ids of one's own messages shown as failed."""
        return [row.message_id for row in self.by_id.values() if row.state == S.FAILED]

    def lines(self) -> list[str]:
        """What the log shows, top to bottom."""
        return [row.plain for row in self.query(MessageRow)]
