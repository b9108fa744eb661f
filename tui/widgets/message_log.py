"""The open conversation: messages with dimmed times, coloured senders, day-change lines, a
"new messages" line, and one compact receipt at the newest of one's own messages.  A reply
shows the message it answers above it, reactions show under it with their counts, and one
message at a time can be selected (alt+up/alt+down) to act on it."""
from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from dim.client import events as E
from dim.client.cache import ChatMessage
from dim.client.transfer import describe_file

MARKS = {
    E.SENDING: "… sending",
    E.SENT: "✓ sent",
    E.DELIVERED: "✓✓ delivered",
    E.READ: "✓✓ read",
    E.FAILED: "✗ failed (ctrl+r retries)",
}

#: Error codes a second try cannot fix: the message is refused, not lost.
PERMANENT = ("not_found", "bad_request", "forbidden", "too_large", "unknown_type", "conflict")

#: Nick colours, picked per user by a stable hash (readable on dark and light themes).
NICK_COLOURS = ("#e06c75", "#98c379", "#e5c07b", "#61afef", "#c678dd", "#56b6c2",
                "#d19a66", "#be5046", "#7ec699", "#f08d49", "#b294bb", "#8abeb7")


def nick_colour(user: str) -> str:
    """The colour ``user``'s name is drawn in, the same on every run and screen."""
    return NICK_COLOURS[zlib.crc32(user.encode("utf-8")) % len(NICK_COLOURS)]


def clock_time(ts_ms: int) -> str:
    """A message time as the log shows it: HH:MM (day-change lines carry the date)."""
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000))


def day_of(ts_ms: int) -> str:
    """The local day of a message time, as a day-change line names it."""
    return time.strftime("%A %d %B %Y", time.localtime(ts_ms / 1000))


#: A mention in a message's text: ``@`` and a user name.
MENTION = re.compile(r"@([A-Za-z0-9_.\-]{1,32})")
#: How much of the message a reply quotes.
QUOTE_LENGTH = 60
#: Where a message's text starts under its time ("HH:MM "): continuation lines align there.
INDENT = "      "
#: Characters that join or restyle emoji: terminals draw the joined glyph narrower than its
#: parts are measured, so they are left out when drawn and the line never overlaps itself.
_JOINERS = dict.fromkeys(map(ord, "\u200d\ufe0f\ufe0e"))


def emoji_text(emoji: str) -> str:
    """A reaction as drawn: without joiners and variation selectors."""
    return emoji.translate(_JOINERS) or "?"


def quote_of(label: str, body: str, kind: str = "text", file: dict[str, Any] | None = None,
             recalled: bool = False) -> str:
    """The line a reply shows of the message it answers (one line, cut to
    :data:`QUOTE_LENGTH`)."""
    if recalled:
        return f"{label}: message recalled"
    text = body if file is None else describe_file(kind, file) + (f" {body}" if body else "")
    text = " ".join(text.split())
    if len(text) > QUOTE_LENGTH:
        text = text[:QUOTE_LENGTH - 1] + "…"
    return f"{label}: {text}"


def permanent(error: str | None) -> bool:
    """Whether a failed message's error is one that retrying cannot fix."""
    return bool(error) and str(error).split(":", 1)[0].strip() in PERMANENT


def mark_text(state: str | None, recipients: int | None, delivered: int, read: int,
              error: str | None = None) -> str:
    """The mark on one's own message: its state, or for a group how many of the
    ``recipients`` it was delivered to and read by."""
    if state is None:
        return ""
    if state == E.FAILED and permanent(error):
        return f"✗ not sent: {error}"
    if recipients is None or state in (E.SENDING, E.FAILED):
        return MARKS.get(state, "")
    if state == E.READ or (recipients and read >= recipients):
        return f"✓✓ read by all {recipients}" if recipients else MARKS[E.READ]
    if delivered:
        text = f"✓✓ delivered to {min(delivered, recipients)} of {recipients}"
        return text + (f", read by {read}" if read else "")
    return MARKS[state]


class MessageRow(Static):
    """One message: time, sender, body (or file) and, for one's own, its mark.

    ``plain`` is the message line as text; a day-change or "new messages" line drawn above
    it is not part of it.
    """

    def __init__(self, *, seq: int | None, id: str, mid: str | None, sender: str, ts: int,
                 body: str, own: bool, state: str | None, label: str | None = None,
                 kind: str = "text", file: dict[str, Any] | None = None,
                 recipients: int | None = None, reply_to: str | None = None,
                 mentions: list[str] | None = None, me: str = "") -> None:
        self.seq, self.message_id, self.mid = seq, id, mid
        self.sender, self.ts, self.body, self.own, self.state = sender, ts, body, own, state
        self.label = label or sender
        self.kind, self.file, self.recipients = kind, file, recipients
        #: The mid this message answers, and the line quoting it (drawn above).
        self.reply_to = reply_to
        self.quote: str | None = None
        self.mentions = list(mentions or [])
        self.me = me
        self.edited: int | None = None
        self.recalled = False
        self.reactions: dict[str, list[str]] = {}
        #: This message's edits, recalls and reactions made here that the node has not
        #: stored yet, by mid (the log's): drawn on it until they settle.
        self.pending_of: Callable[[str], dict[Any, Any]] | None = None
        self.selected = False
        self.error: str | None = None
        self.delivered_by: set[str] = set()
        self.read_by: set[str] = set()
        #: Whether this row carries the receipt (the newest own message does).
        self.show_mark = True
        #: A line drawn above the message: a day change, or where new messages start.
        self.day_line: str | None = None
        self.new_line = False
        super().__init__(classes="-own" if own else "")
        self.plain = ""
        self._render_text()

    def mark(self) -> str:
        """The receipt or state this row shows (sending and failed always show)."""
        if not self.own:
            return ""
        if not self.show_mark and self.state not in (E.SENDING, E.FAILED):
            return ""
        return mark_text(self.state, self.recipients, len(self.delivered_by),
                         len(self.read_by), self.error)

    @property
    def mentions_me(self) -> bool:
        """Whether this message (from someone else) mentions the person."""
        return not self.own and bool(self.me) and self.me in self.mentions

    def pending(self) -> dict[Any, Any]:
        """Changes made here not stored yet: "edit" -> the new text, "recall" -> True,
        ("reaction", emoji) -> on."""
        if self.pending_of is None or self.mid is None:
            return {}
        return self.pending_of(self.mid)

    @property
    def shown_body(self) -> str:
        """The text as shown: an edit on its way, else the stored text."""
        return str(self.pending().get("edit", self.body))

    def shown_reactions(self) -> tuple[dict[str, list[str]], set[str]]:
        """The reactions as shown, with the person's own on their way, and the emoji whose
        own reaction is on its way."""
        reactions = {e: list(users) for e, users in self.reactions.items()}
        waiting: set[str] = set()
        for key, on in self.pending().items():
            if not isinstance(key, tuple):
                continue
            emoji = key[1]
            users = reactions.setdefault(emoji, [])
            if on and self.me not in users:
                users.append(self.me)
            elif not on and self.me in users:
                users.remove(self.me)
            waiting.add(emoji)
        return reactions, waiting

    def reaction_parts(self) -> list[tuple[str, str]]:
        """The reactions under the message as (text, style): each with its count, one
        whose own reaction is on its way dimmed, with "…"."""
        if self.recalled:
            return []
        reactions, waiting = self.shown_reactions()
        parts = []
        for emoji, users in reactions.items():
            if emoji in waiting:
                parts.append((f"{emoji_text(emoji)} {len(users)}…", "dim italic"))
            elif users:
                parts.append((f"{emoji_text(emoji)} {len(users)}",
                              "bold $accent" if self.me in users else "$text-muted"))
        return parts

    def reaction_line(self) -> str:
        """The reactions under the message with their counts ("👍 2  🎉 1"), or ""."""
        return "  ".join(text for text, _ in self.reaction_parts())

    def _body_parts(self, text: str) -> list[Any]:
        """The text with each mention of a mentioned member highlighted (the person's own
        name most)."""
        if not self.mentions:
            return [text]
        parts: list[Any] = []
        at = 0
        for found in MENTION.finditer(text):
            name = found.group(1)
            if name not in self.mentions:
                continue
            parts.append(text[at:found.start()])
            style = "bold reverse $warning" if name == self.me else "bold $accent"
            parts.append((found.group(0), style))
            at = found.end()
        parts.append(text[at:])
        return parts

    def _render_text(self) -> None:
        pending = self.pending()
        body = self.shown_body
        text = body
        if self.file is not None or self.kind in ("image", "file"):
            text = describe_file(self.kind, self.file) + (f" {body}" if body else "")
        if self.recalled:
            text = "message recalled"
        text = text.replace("\n", "\n" + INDENT)
        edited = " (edited)" if self.edited and not self.recalled else ""
        if self.recalled:
            pass
        elif "recall" in pending:
            edited = " (recalling…)"
        elif "edit" in pending:
            edited = " (editing…)"
        mark = self.mark()
        stamp = clock_time(self.ts)
        self.plain = f"{stamp} {self.label}: {text}{edited}" + (f"  {mark}" if mark else "")
        self.set_class(self.state == E.FAILED, "-failed")
        self.set_class(self.file is not None, "-file")
        self.set_class(self.mentions_me, "-mention")
        self.set_class(self.selected, "-selected")
        parts: list[Any] = []
        if self.day_line is not None:
            parts.append((f"── {self.day_line} ──\n", "dim"))
        if self.new_line:
            parts.append(("── new messages ──\n", "bold $accent"))
        if self.quote is not None:
            # One line whatever the width: cut to what the row has room for.
            quote = Content.styled(f"{INDENT}╭ {self.quote}", "dim italic")
            room = self.content_size.width
            if room > len(INDENT) + 8:
                quote = quote.truncate(room, ellipsis=True)
            parts += [quote, "\n"]
        parts += [(stamp, "dim"), " ", (self.label, f"bold {nick_colour(self.sender)}"), ": "]
        if self.recalled:
            parts.append((text, "dim italic"))
        else:
            parts += self._body_parts(text)
        if edited:
            parts.append((edited, "dim"))
        if mark:
            parts.append(f"  {mark}" if self.state == E.FAILED else (f"  {mark}", "dim"))
        reactions = self.reaction_parts()
        if reactions:
            parts.append("\n" + INDENT)
            for n, part in enumerate(reactions):
                if n:
                    parts.append("  ")
                parts.append(part)
        self.update(Content.assemble(*parts))

    def on_resize(self, event: events.Resize) -> None:
        if self.quote is not None:
            self._render_text()  # the quote is cut to the width

    def show_state(self, m: ChatMessage) -> None:
        """Show the message's current state: its text, edited, recalled, reactions."""
        self.body = m.body
        self.file = m.file
        self.edited = m.edited
        self.recalled = m.recalled
        self.reactions = {k: list(v) for k, v in (m.reactions or {}).items()}
        if m.mentions is not None:
            self.mentions = list(m.mentions)
        self._render_text()

    def set_quote(self, quote: str | None) -> None:
        """Show (or change) the line quoting the message this one answers."""
        if quote != self.quote:
            self.quote = quote
            self._render_text()

    def set_selected(self, selected: bool) -> None:
        """Draw the row as the selected one, or not."""
        if selected != self.selected:
            self.selected = selected
            self._render_text()

    def set_state(self, state: str, *, seq: int | None = None, mid: str | None = None,
                  ts: int | None = None, error: str | None = None) -> None:
        """Show a new state of one's own message (never going back)."""
        if self.state is not None and self.state != E.FAILED \
                and E.STATE_RANK[state] < E.STATE_RANK[self.state]:
            return
        self.state = state
        self.error = error if state == E.FAILED else None
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
            self.set_state(E.READ if read else E.DELIVERED)
        else:
            if self.state in (E.SENDING, E.SENT, None):
                self.state = E.DELIVERED
            self._render_text()

    def relabel(self, label: str) -> None:
        """The sender's display name changed."""
        if label != self.label:
            self.label = label
            self._render_text()

    def set_lines(self, day_line: str | None, new_line: bool, show_mark: bool) -> None:
        """Set what is drawn above the message and whether it carries the receipt."""
        if (day_line, new_line, show_mark) != (self.day_line, self.new_line, self.show_mark):
            self.day_line, self.new_line, self.show_mark = day_line, new_line, show_mark
            self._render_text()


class InfoRow(Static):
    """A line about the conversation itself: someone joined or left, a rename."""

    def __init__(self, text: str, ts: int) -> None:
        self.plain = f"{clock_time(ts)} -- {text}"
        self.ts = ts
        super().__init__(Content.styled(self.plain, "dim italic"), classes="-info")


class MessageLog(VerticalScroll):
    """The messages of one conversation, oldest at the top; each seq appears once.

    ``namer`` gives display names; ``recipients`` is how many members besides oneself a
    group message goes to (None for a person-to-person chat).  ``unseen_below`` counts
    messages that arrived while the person was scrolled up.
    """

    @dataclass
    class OlderWanted(Message):
        """The person scrolled up past the oldest message shown."""

    @dataclass
    class Viewed(Message):
        """What the log shows may have changed (it scrolled, or messages came)."""

    @dataclass
    class BelowChanged(Message):
        """How many new messages wait below the part shown changed."""

        count: int

    @dataclass
    class Act(Message):
        """The person asked to act on the selected message: ``action`` is reply, edit,
        recall or react."""

        action: str
        row: MessageRow

    @dataclass
    class SelectionDone(Message):
        """The person left the selection (Escape, or down past the newest message)."""

    BINDINGS = [
        Binding("up,alt+up", "select(-1)", "Older", show=False),
        Binding("down,alt+down", "select(1)", "Newer", show=False),
        Binding("r", "act('reply')", "Reply"),
        Binding("e", "act('edit')", "Edit"),
        Binding("d", "act('recall')", "Recall"),
        Binding("plus", "act('react')", "React"),
        Binding("escape", "leave", "Back", show=False),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.me = ""
        self.by_seq: dict[int, MessageRow] = {}
        self.by_id: dict[str, MessageRow] = {}
        self.namer: Callable[[str], str] | None = None
        #: Finds a message not shown here (a reply's original), by mid.
        self.lookup: Callable[[str], ChatMessage | None] | None = None
        self.recipients: int | None = None
        #: The row selected to act on, if any.
        self.selected: MessageRow | None = None
        #: The seq above which messages are new (a line is drawn there), if any.
        self.new_after: int | None = None
        #: Edits, recalls and reactions made here that the node has not stored yet, by the
        #: mid they change: "edit", "recall" or ("reaction", emoji) -> (token, value).  Kept
        #: across conversations: they settle wherever the person is.
        self.waiting: dict[str, dict[Any, tuple[object, Any]]] = {}
        self.unseen_below = 0
        #: The row at the top of the view and how far into it, kept across a resize.
        self._top: tuple[Widget, float] | None = None
        self._size_seen = self.size

    def on_mount(self) -> None:
        self.anchor()  # stay at the newest message until the person scrolls up

    async def reset(self, me: str, namer: Callable[[str], str] | None = None,
                    recipients: int | None = None) -> None:
        """Empty the log for a newly opened conversation."""
        self.me = me
        self.namer = namer
        self.recipients = recipients
        self.new_after = None
        self.selected = None
        self.by_seq.clear()
        self.by_id.clear()
        self._set_below(0)
        await self.remove_children()

    @property
    def oldest_seq(self) -> int | None:
        """The lowest seq shown, where older history continues."""
        return min(self.by_seq) if self.by_seq else None

    @property
    def at_bottom(self) -> bool:
        """Whether the newest line is in view."""
        return self.max_scroll_y == 0 or self.scroll_y >= self.max_scroll_y - 1

    def _label(self, sender: str) -> str:
        return self.namer(sender) if self.namer is not None else sender

    def _row_for_message(self, m: ChatMessage) -> MessageRow:
        own = m.sender == self.me
        state = (E.READ if m.read else E.DELIVERED if m.delivered else E.SENT) if own else None
        row = MessageRow(seq=m.seq, id=m.id, mid=m.mid, sender=m.sender, ts=m.ts, body=m.body,
                         own=own, state=state, label=self._label(m.sender), kind=m.kind,
                         file=m.file, recipients=self.recipients, reply_to=m.reply_to,
                         mentions=m.mentions, me=self.me)
        row.quote = self._quote(m.reply_to)
        if m.edited or m.recalled or m.reactions:
            row.show_state(m)
        elif row.quote is not None:
            row._render_text()
        return row

    def row_by_mid(self, mid: str) -> MessageRow | None:
        """The row of message ``mid``, if shown."""
        for row in self.rows():
            if row.mid == mid:
                return row
        return None

    def _quote(self, mid: str | None) -> str | None:
        """The quote line of a reply to ``mid`` (None for a message that answers nothing)."""
        if mid is None:
            return None
        row = self.row_by_mid(mid)
        if row is not None:
            return quote_of(row.label, row.body, row.kind, row.file, row.recalled)
        m = self.lookup(mid) if self.lookup is not None else None
        if m is None:
            return "a message not loaded here"
        return quote_of(self._label(m.sender), m.body, m.kind, m.file, m.recalled)

    def update_message(self, m: ChatMessage) -> bool:
        """Show message ``m`` in its new state (edited, recalled, reactions), and the
        replies quoting it; False if it is not shown here."""
        row = self.row_by_mid(m.mid)
        if row is not None:
            row.show_state(m)
        for reply in self.rows():
            if reply.reply_to == m.mid:
                reply.set_quote(self._quote(m.mid))
        return row is not None

    def last_own_editable(self) -> MessageRow | None:
        """The newest of one's own text messages that the node stored and that is not
        recalled: what Up on an empty input edits."""
        for row in reversed(self.rows()):
            if row.own and row.mid is not None and row.kind == "text" and not row.recalled:
                return row
        return None

    # ------------------------------------------------------------ selection

    def select(self, step: int) -> MessageRow | None:
        """Select the message ``step`` rows older (-1) or newer (+1) than the selected one
        (none selected: the newest); past the newest, nothing is selected."""
        rows = self.rows()
        if not rows:
            return None
        if self.selected is None or self.selected not in rows:
            index = len(rows) - 1 if step < 0 else len(rows)
        else:
            index = rows.index(self.selected) + step
        index = max(index, 0)
        if self.selected is not None:
            self.selected.set_selected(False)
        if index >= len(rows):
            self.selected = None
            return None
        self.selected = rows[index]
        self.selected.set_selected(True)
        self.scroll_to_widget(self.selected, animate=False)
        return self.selected

    def clear_selection(self) -> None:
        """Select nothing."""
        if self.selected is not None:
            self.selected.set_selected(False)
        self.selected = None

    def action_select(self, step: int) -> None:
        """Move the selection; down past the newest message goes back to the input."""
        if self.select(step) is None:
            self.post_message(self.SelectionDone())

    def action_act(self, action: str) -> None:
        """Act on the selected message."""
        if self.selected is not None:
            self.post_message(self.Act(action, self.selected))

    def action_leave(self) -> None:
        """Leave the selection, back to the input."""
        self.clear_selection()
        self.post_message(self.SelectionDone())

    def pending_changes(self, mid: str) -> dict[Any, Any]:
        """The changes to ``mid`` made here that the node has not stored yet."""
        return {key: value for key, (_, value) in self.waiting.get(mid, {}).items()}

    def show_pending(self, mid: str, key: Any, value: Any) -> object:
        """Show a change to ``mid`` on its way at once ("edit" -> the text, "recall" ->
        True, ("reaction", emoji) -> on); the token settles it."""
        token = object()
        self.waiting.setdefault(mid, {})[key] = (token, value)
        row = self.row_by_mid(mid)
        if row is not None:
            row._render_text()
        return token

    def settle(self, mid: str, key: Any, token: object, m: ChatMessage | None) -> None:
        """The change ``token`` to ``mid`` was stored or failed: show ``m`` (the message
        as the core has it now) with what else is still on its way."""
        changes = self.waiting.get(mid, {})
        if key in changes and changes[key][0] is token:
            del changes[key]
            if not changes:
                del self.waiting[mid]
        row = self.row_by_mid(mid)
        if row is not None:
            if m is not None:
                row.show_state(m)
            else:
                row._render_text()

    def _remember(self, row: MessageRow) -> None:
        row.pending_of = self.pending_changes
        if row.seq is not None:
            self.by_seq[row.seq] = row
        if row.own:
            self.by_id[row.message_id] = row

    def rows(self) -> list[MessageRow]:
        """The message rows, top to bottom."""
        return list(self.query(MessageRow))

    def decorate(self) -> None:
        """Draw day-change lines and the "new messages" line, and put the receipt on the
        newest of one's own messages that the node has stored."""
        rows = self.rows()
        newest_own = None
        for row in reversed(rows):
            if row.own and row.seq is not None and row.state not in (E.SENDING, E.FAILED):
                newest_own = row
                break
        # The first message gets a day line too unless it is from today.
        previous_day: str | None = day_of(int(time.time() * 1000))
        new_drawn = False
        for row in rows:
            day = day_of(row.ts)
            day_line = day if day != previous_day else None
            previous_day = day
            new_line = (not new_drawn and self.new_after is not None and row.seq is not None
                        and row.seq > self.new_after and not row.own)
            new_drawn = new_drawn or new_line
            row.set_lines(day_line, new_line, row is newest_own)

    def mark_new_after(self, seq: int | None) -> None:
        """Draw the "new messages" line above the first message after ``seq``."""
        self.new_after = seq
        self.decorate()

    def relabel(self) -> None:
        """Names changed: draw every sender with its current display name."""
        for row in self.rows():
            row.relabel(self._label(row.sender))

    async def add_message(self, m: ChatMessage) -> None:
        """Show an inbox message at its place by seq (once)."""
        if m.seq in self.by_seq:
            return
        if m.sender == self.me and m.id in self.by_id:
            row = self.by_id[m.id]
            row.set_state(E.READ if m.read else E.DELIVERED if m.delivered else E.SENT,
                          seq=m.seq, mid=m.mid, ts=m.ts)
            self.by_seq[m.seq] = row
            self.decorate()
            return
        row = self._row_for_message(m)
        self._remember(row)
        later = [r for r in self.rows() if r.seq is not None and r.seq > m.seq]
        at_bottom = self.at_bottom
        if later:
            await self.mount(row, before=later[0])
        else:
            pending = [r for r in self.rows() if r.seq is None]
            await self.mount(row, before=pending[0] if pending else None)
        self.decorate()
        if later:
            return
        if at_bottom:
            self.scroll_end(animate=False)
        elif m.sender != self.me:
            if self.unseen_below == 0 and self.new_after is None:
                self.new_after = m.seq - 1
                self.decorate()
            self._set_below(self.unseen_below + 1)

    async def add_info(self, text: str, ts: int | None = None) -> None:
        """A line about the conversation (a join, a leave, a rename), at the bottom."""
        at_bottom = self.at_bottom
        await self.mount(InfoRow(text, ts if ts is not None else int(time.time() * 1000)))
        if at_bottom:
            self.scroll_end(animate=False)

    async def add_older(self, messages: list[ChatMessage], keep_view: bool = False) -> int:
        """Put history (oldest first) at its place by seq, each seq once: above what is
        shown, or between (a page fetched from the server may fill gaps of the cache).
        With ``keep_view`` the rows in view stay where they are on screen.  Returns how many
        were new."""
        fresh = [m for m in sorted(messages, key=lambda m: m.seq) if m.seq not in self.by_seq]
        if not fresh:
            return 0
        top = self._row_at(self.scroll_y) if keep_view else None
        oldest = self.oldest_seq
        older = [m for m in fresh if oldest is None or m.seq < oldest]
        rows = [self._row_for_message(m) for m in older]
        for row in rows:
            self._remember(row)
        if rows:
            first = self.query(MessageRow)
            if first:
                await self.mount_all(rows, before=first.first())
            else:
                await self.mount_all(rows)
        for m in fresh[len(older):]:
            row = self._row_for_message(m)
            self._remember(row)
            later = [r for r in self.rows() if r.seq is not None and r.seq > m.seq]
            pending = [r for r in self.rows() if r.seq is None]
            await self.mount(row, before=later[0] if later else (pending[0] if pending else None))
        self.decorate()
        if top is not None:
            widget, offset = top
            self.call_after_refresh(self._back_to, widget, offset)
        return len(fresh)

    async def drop_before(self, seq: int) -> int:
        """Take away the messages older than ``seq`` (the cache's, below a server page: they
        may hide gaps; scrolling back loads them again with the gaps filled).  Returns how
        many went."""
        gone = [r for r in self.rows() if r.seq is not None and r.seq < seq]
        for row in gone:
            self.by_seq.pop(row.seq, None)  # type: ignore[arg-type]
            if row.own:
                self.by_id.pop(row.message_id, None)
            if row is self.selected:
                self.selected = None
        if gone:
            await self.remove_children(gone)
        return len(gone)

    def newest_visible_seq(self) -> int | None:
        """The seq of the newest message wholly in view (what the person can see)."""
        top = self.scroll_y
        bottom = top + self.scrollable_content_region.height
        newest = None
        for row in self.rows():
            region = row.virtual_region
            if row.seq is None or region.height == 0:
                continue
            if region.y + region.height <= bottom + 0.5 and region.y + region.height > top:
                newest = row.seq if newest is None else max(newest, row.seq)
        return newest

    def jump_to(self, seq: int) -> bool:
        """Scroll message ``seq`` into the middle of the view and mark it found; False if it
        is not shown."""
        row = self.by_seq.get(seq)
        if row is None:
            return False
        for other in self.rows():
            other.set_class(other is row, "-found")
        self.scroll_to_widget(row, animate=False, center=True, immediate=True)
        return True

    def apply_receipts(self, receipts: dict[str, tuple[set[str], set[str]]]) -> None:
        """Who acknowledged and read one's own messages, as the client core kept it."""
        for row in self.by_id.values():
            if row.mid is not None and row.mid in receipts:
                delivered, read = receipts[row.mid]
                if delivered - row.delivered_by or read - row.read_by:
                    row.delivered_by |= delivered
                    row.read_by |= read
                    if row.recipients is None:
                        row.set_state(E.READ if read else E.DELIVERED)
                    else:
                        if row.state in (E.SENDING, E.SENT, None):
                            row.state = E.DELIVERED
                        row._render_text()

    async def add_outgoing(self, out: E.OutgoingMessage, me: str) -> None:
        """Show (or update) one's own message sent from here."""
        row = self.by_id.get(out.id)
        if row is not None:
            row.delivered_by |= out.delivered_by
            row.read_by |= out.read_by
            row.set_state(out.state, seq=out.seq, mid=out.mid, ts=out.ts, error=out.error)
            if out.seq is not None:
                self.by_seq[out.seq] = row
            self.decorate()
            return
        if out.seq is not None and out.seq in self.by_seq:
            return
        row = MessageRow(seq=out.seq, id=out.id, mid=out.mid, sender=me, ts=out.ts or out.created,
                         body=out.body, own=True, state=out.state, label=self._label(me),
                         kind=out.kind, file=out.file, recipients=self.recipients,
                         reply_to=out.reply_to, mentions=out.mentions, me=me)
        row.quote = self._quote(out.reply_to)
        if row.quote is not None:
            row._render_text()
        row.error = out.error if out.state == E.FAILED else None
        row.delivered_by |= out.delivered_by
        row.read_by |= out.read_by
        self._remember(row)
        await self.mount(row)
        self.decorate()
        self.scroll_end(animate=False)
        self._set_below(0)

    def scroll_end(self, **kwargs: Any) -> None:
        """Scroll to the newest message, and say what shows once there: an anchored log is
        moved by the layout without a scroll_y watch, so the watch alone would miss it."""
        then = kwargs.pop("on_complete", None)

        def viewed() -> None:
            self.post_message(self.Viewed())
            if then is not None:
                then()
        super().scroll_end(on_complete=viewed, **kwargs)

    def action_page_up(self) -> None:
        if self.scroll_y <= 0 and self.by_seq:
            self.post_message(self.OlderWanted())  # at the top already: back in time
        super().action_page_up()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0 and self.by_seq:
            self.post_message(self.OlderWanted())

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self.unseen_below and self.at_bottom:
            self._set_below(0)
        if round(old) != round(new):
            self.post_message(self.Viewed())
        if self.size == self._size_seen:
            self._top = self._row_at(new)

    def _row_at(self, y: float) -> tuple[Widget, float] | None:
        for child in self.children:
            region = child.virtual_region
            if region.y <= y < region.y + max(region.height, 1):
                return child, y - region.y
        return None

    def on_resize(self, event: events.Resize) -> None:
        self._size_seen = event.size
        if self.is_anchored and not self._anchor_released:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)
        elif self._top is not None:
            row, offset = self._top
            self.call_after_refresh(self._back_to, row, offset)

    def _back_to(self, row: Widget, offset: float) -> None:
        """Scroll so that ``row`` is at the top again (after a resize)."""
        if row.parent is self:
            self.scroll_to(y=row.virtual_region.y + offset, animate=False, immediate=True,
                           release_anchor=False)
            self._top = (row, offset)

    def _set_below(self, count: int) -> None:
        if count != self.unseen_below:
            self.unseen_below = count
            self.post_message(self.BelowChanged(count))

    def mark_delivered(self, mid: str, by: str | None = None) -> None:
        """Mark one's own message ``mid`` delivered (it may have been sent from another device)."""
        for row in self.by_id.values():
            if row.mid == mid:
                if by is None:
                    row.set_state(E.DELIVERED)
                else:
                    row.receipt(by, read=False)

    def mark_read(self, mid: str, by: str) -> None:
        """``by`` has read one's own message ``mid``."""
        for row in self.by_id.values():
            if row.mid == mid:
                row.receipt(by, read=True)

    def files(self) -> list[dict[str, Any]]:
        """The files of the messages shown, oldest first (never those recalled)."""
        return [row.file for row in self.query(MessageRow)
                if row.file is not None and not row.recalled]

    def failed_ids(self, retryable: bool = True) -> list[str]:
        """Ids of one's own messages shown as failed (only those a retry can fix, unless
        ``retryable`` is False)."""
        return [row.message_id for row in self.by_id.values() if row.state == E.FAILED
                and not (retryable and permanent(row.error))]

    def lines(self) -> list[str]:
        """What the log shows, top to bottom (message and info lines)."""
        return [row.plain for row in self.query("MessageRow, InfoRow")]  # type: ignore[attr-defined]

    def day_lines(self) -> list[str]:
        """The day-change lines drawn, top to bottom."""
        return [row.day_line for row in self.rows() if row.day_line is not None]

    def new_line_at(self) -> int | None:
        """The seq of the message the "new messages" line is drawn above, if any."""
        for row in self.rows():
            if row.new_line:
                return row.seq
        return None
