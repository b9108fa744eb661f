"""The open conversation: messages with times, senders and marks on one's own messages."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from textual import events
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from dim.client import session as S
from dim.client.cache import ChatMessage
from dim.client.transfer import describe_file

MARKS = {
    S.SENDING: "… sending",
    S.SENT: "✓ sent",
    S.DELIVERED: "✓✓ delivered",
    S.READ: "✓✓ read",
    S.FAILED: "✗ failed (ctrl+r retries)",
}


def clock_time(ts_ms: int) -> str:
    """A message time as the log shows it: HH:MM, with the date if not today."""
    t = time.localtime(ts_ms / 1000)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def mark_text(state: str | None, recipients: int | None, delivered: int, read: int) -> str:
    """The mark on one's own message: its state, or for a group how many of the
    ``recipients`` it was delivered to and read by."""
    if state is None:
        return ""
    if recipients is None or state in (S.SENDING, S.FAILED):
        return MARKS.get(state, "")
    if state == S.READ or (recipients and read >= recipients):
        return f"✓✓ read by all {recipients}" if recipients else MARKS[S.READ]
    if delivered:
        text = f"✓✓ delivered to {min(delivered, recipients)} of {recipients}"
        return text + (f", read by {read}" if read else "")
    return MARKS[state]


class MessageRow(Static):
    """One message: time, sender, body (or file) and, for one's own, its marks."""

    def __init__(self, *, seq: int | None, id: str, mid: str | None, sender: str, ts: int,
                 body: str, own: bool, state: str | None, label: str | None = None,
                 kind: str = "text", file: dict[str, Any] | None = None,
                 recipients: int | None = None) -> None:
        self.seq, self.message_id, self.mid = seq, id, mid
        self.sender, self.ts, self.body, self.own, self.state = sender, ts, body, own, state
        self.label = label or sender
        self.kind, self.file, self.recipients = kind, file, recipients
        self.delivered_by: set[str] = set()
        self.read_by: set[str] = set()
        super().__init__(classes="-own" if own else "")
        self.plain = ""
        self._render_text()

    def _render_text(self) -> None:
        text = self.body
        if self.file is not None or self.kind in ("image", "file"):
            text = describe_file(self.kind, self.file) + (f" {self.body}" if self.body else "")
        text = text.replace("\n", "\n      ")
        mark = ""
        if self.own:
            mark = mark_text(self.state, self.recipients, len(self.delivered_by), len(self.read_by))
        self.plain = f"{clock_time(self.ts)} {self.label}: {text}" + (f"  {mark}" if mark else "")
        self.set_class(self.state == S.FAILED, "-failed")
        self.set_class(self.file is not None, "-file")
        self.update(Content(self.plain))

    def set_state(self, state: str, *, seq: int | None = None, mid: str | None = None,
                  ts: int | None = None) -> None:
        """Show a new state of one's own message (never going back)."""
        if self.state is not None and self.state != S.FAILED \
                and S.STATE_RANK[state] < S.STATE_RANK[self.state]:
            return
        self.state = state
        self.seq = seq if seq is not None else self.seq
        self.mid = mid if mid is not None else self.mid
        self.ts = ts if ts is not None else self.ts
        self._render_text()

    def receipt(self, by: str, read: bool) -> None:
        """Recipient ``by`` acknowledged (or read) this message."""
        self.delivered_by.add(by)
        if read:
            self.read_by.add(by)
        if self.recipients is None:
            self.set_state(S.READ if read else S.DELIVERED)
        else:
            if self.state in (S.SENDING, S.SENT, None):
                self.state = S.DELIVERED
            self._render_text()


class MessageLog(VerticalScroll):
    """The messages of one conversation, oldest at the top; each seq appears once.

    ``namer`` gives display names for group messages; ``recipients`` is how many members
    besides oneself a group message goes to (None for a person-to-person chat).
    """

    @dataclass
    class OlderWanted(Message):
        """The person scrolled up past the oldest message shown."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.me = ""
        self.by_seq: dict[int, MessageRow] = {}
        self.by_id: dict[str, MessageRow] = {}
        self.namer: Callable[[str], str] | None = None
        self.recipients: int | None = None

    async def reset(self, me: str, namer: Callable[[str], str] | None = None,
                    recipients: int | None = None) -> None:
        """Empty the log for a newly opened conversation."""
        self.me = me
        self.namer = namer
        self.recipients = recipients
        self.by_seq.clear()
        self.by_id.clear()
        await self.remove_children()

    @property
    def oldest_seq(self) -> int | None:
        """The lowest seq shown, where older history continues."""
        return min(self.by_seq) if self.by_seq else None

    def _label(self, sender: str) -> str:
        return self.namer(sender) if self.namer is not None else sender

    def _row_for_message(self, m: ChatMessage) -> MessageRow:
        own = m.sender == self.me
        state = (S.READ if m.read else S.DELIVERED if m.delivered else S.SENT) if own else None
        return MessageRow(seq=m.seq, id=m.id, mid=m.mid, sender=m.sender, ts=m.ts, body=m.body,
                          own=own, state=state, label=self._label(m.sender), kind=m.kind,
                          file=m.file, recipients=self.recipients)

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
            row.set_state(S.READ if m.read else S.DELIVERED if m.delivered else S.SENT,
                          seq=m.seq, mid=m.mid, ts=m.ts)
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
            row.delivered_by |= out.delivered_by
            row.read_by |= out.read_by
            row.set_state(out.state, seq=out.seq, mid=out.mid, ts=out.ts)
            if out.seq is not None:
                self.by_seq[out.seq] = row
            return
        if out.seq is not None and out.seq in self.by_seq:
            return
        row = MessageRow(seq=out.seq, id=out.id, mid=out.mid, sender=me, ts=out.ts or out.created,
                         body=out.body, own=True, state=out.state, label=self._label(me),
                         kind=out.kind, file=out.file, recipients=self.recipients)
        row.delivered_by |= out.delivered_by
        row.read_by |= out.read_by
        self._remember(row)
        await self.mount(row)
        self.scroll_end(animate=False)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0 and self.by_seq:
            self.post_message(self.OlderWanted())

    def mark_delivered(self, mid: str, by: str | None = None) -> None:
        """Mark one's own message ``mid`` delivered (it may have been sent from another device)."""
        for row in self.by_id.values():
            if row.mid == mid:
                if by is None:
                    row.set_state(S.DELIVERED)
                else:
                    row.receipt(by, read=False)

    def mark_read(self, mid: str, by: str) -> None:
        """``by`` has read one's own message ``mid``."""
        for row in self.by_id.values():
            if row.mid == mid:
                row.receipt(by, read=True)

    def files(self) -> list[dict[str, Any]]:
        """The files of the messages shown, oldest first."""
        return [row.file for row in self.query(MessageRow) if row.file is not None]

    def failed_ids(self) -> list[str]:
        """Ids of one's own messages shown as failed."""
        return [row.message_id for row in self.by_id.values() if row.state == S.FAILED]

    def lines(self) -> list[str]:
        """What the log shows, top to bottom."""
        return [row.plain for row in self.query(MessageRow)]
