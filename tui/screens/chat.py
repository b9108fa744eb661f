"""The chat screen: conversations and contacts on the left, the open conversation in the
middle, a group's members on the right, and the input at the bottom."""
from __future__ import annotations

import json
import os
import time
from typing import Any

import platformdirs
from twisted.internet.defer import Deferred
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker
from textual.widgets import Footer, Static, TextArea

from dim import errors
from dim.client import events as E
from dim.client.cache import ChatMessage
from dim.client.conversations import ConversationReadUpTo
from dim.client.unread import UnreadChanged
from dim.client.transfer import human_size, safe_name
from tui import wait_for
from tui.commands import BY_NAME, command_help, command_names
from tui.core import ChatCore
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.image import ImageScreen
from tui.screens.profile import ProfileScreen
from tui.screens.reaction import ReactionScreen
from tui.screens.search import MessageSearchScreen, SearchScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.contact_list import ContactList
from tui.widgets.conversation_list import ConversationList
from tui.widgets.member_list import MemberList
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MENTION, MessageLog, MessageRow, permanent, quote_of
from tui.widgets.transfer_bar import TransferBar

HISTORY_PAGE = 50
#: How many pages back a search result is looked for before giving up.
JUMP_PAGES = 20
#: How long "is typing" stays without a new typing frame.
TYPING_SHOWN = 5.0
#: How often contacts, groups and the own profile are fetched again, in seconds.
PEOPLE_REFRESH = 60.0
#: How long a notice stays: this long, plus a little per line.
NOTICE_SECONDS = 8.0
#: Below this width the members pane hides itself; below NARROW_SIDE the conversations pane.
NARROW_MEMBERS = 110
NARROW_SIDE = 60
#: The conversations pane's width on a wide and on a middling terminal.
SIDE_WIDE, SIDE_NARROW, WIDE = 34, 26, 130
#: The legend under the members of a group.
MEMBERS_LEGEND = "● online  ○ offline\n· not a contact:\n  presence unknown"


class ChatScreen(Screen[None]):
    """Conversations, contacts, the open one, and the input; shows what the client core reports."""

    CSS_PATH = "chat.tcss"
    BINDINGS = [
        Binding("ctrl+r", "retry", "Retry", show=False),
        Binding("ctrl+o", "older", "Older", show=False),
        Binding("ctrl+s", "save", "Save file", show=False),
        Binding("f1", "help", "Help"),
        Binding("f2", "focus_contacts", "Contacts"),
        Binding("f3", "toggle_side", "Panes"),
        Binding("f4", "toggle_members", "Members", show=False),
        Binding("f5", "reconnect", "Reconnect", show=False),
        Binding("ctrl+l", "redraw", "Redraw", show=False),
        Binding("ctrl+n,alt+right", "next_conversation", "Next", show=False),
        Binding("ctrl+p,alt+left", "previous_conversation", "Previous", show=False),
        Binding("alt+a", "next_active", "Next active", show=False),
        *[Binding(f"alt+{n}", f"nth_conversation({n})", show=False) for n in range(1, 10)],
        Binding("escape", "focus_input", "Input", show=False),
        Binding("ctrl+q", "app.quit", "Quit"),
    ]

    class LogoutRequested(Message):
        """The person asked to log out (/logout); the app logs out and shows the login."""

    class Ring(Message):
        """A message came in a conversation that is not open; the app rings the bell."""

    def __init__(self, client: ChatCore, state_path: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.state_path = state_path
        self.peer: str | None = None
        self.opened: list[str] = []
        self._refresh_pending = False
        #: Who is typing where: peer -> user -> the timer that clears it.
        self.typing: dict[str, dict[str, Timer]] = {}
        self._fetching_avatars: set[str] = set()
        #: Every group's name as last seen (also of groups left), and old names to ids.
        self.group_names: dict[str, str] = {}
        self.old_group_names: dict[str, str] = {}
        #: The groups as last seen, to tell joins, leaves and renames.
        self._groups_seen: dict[str, dict[str, Any]] | None = None
        #: Lines about groups that are not open, shown when opened.
        self.group_events: dict[str, list[tuple[str, int]]] = {}
        #: Presence of people who are not contacts, as last asked of the gateway.
        self.presence_hint: dict[str, bool] = {}
        #: Conversations with a message mentioning the person, not yet opened.
        self.mentions: set[str] = set()
        #: Failed messages already told about (said once, not at every reconnect).
        self._failed_said: set[str] = set()
        #: The person's own choice of which panes show (None: by the terminal's width).
        self.side_wanted: bool | None = None
        self.members_wanted: bool | None = None
        self._notice_timer: Timer | None = None
        #: The conversation list's order, for alt+N and ctrl+n/ctrl+p.
        self.order: list[str] = []
        #: The mid the next message answers, and the own message being edited (mid and the
        #: text it had), while the line above the input says so.
        self.replying: str | None = None
        self.editing: tuple[str, str] | None = None
        self._read_pending = False
        self._loading_older = False
        #: How often the person scrolled from the input (a scroll wins over one planned).
        self._scrolls = 0
        #: The open conversation once the server's newest page is merged into it (until
        #: then nothing is marked read), the conversations whose page is being fetched, and
        #: the work merging the page that is on its way.
        self._vouched: str | None = None
        self._fetching: set[str] = set()
        self._page_worker: Worker[None] | None = None

    @property
    def me(self) -> str:
        """The logged-in user."""
        return self.client.user or ""

    def compose(self) -> ComposeResult:
        yield ConnectionBar(id="connection")
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield Static("Conversations", classes="pane-title")
                yield ConversationList(id="conversations")
                yield Static("Contacts", classes="pane-title")
                yield ContactList(id="contacts")
            with Vertical(id="conversation"):
                yield Static("No conversation: /open USER or pick one (F1 help)",
                             id="title")
                yield MessageLog(id="log")
                yield Static("", id="below")
                yield Static("", id="typing")
                yield TransferBar(id="transfer")
                yield Static("", id="notice")
                yield Static("", id="compose")
                yield MessageInput(id="input")
            yield MemberList(id="members")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(MemberList).display = False
        self.query_one("#below").display = False
        self.query_one("#notice").display = False
        self.query_one("#compose").display = False
        self.query_one(MessageInput).completer = self.completions
        self.query_one(MessageLog).lookup = self.client.message
        # Names and statuses change without a notify: look again now and then.
        self.set_interval(PEOPLE_REFRESH, self.refresh_people)
        if self.client.groups():
            self.note_groups()  # else the first fetch of the groups is the starting point
        await self.refresh_conversations()
        await self.refresh_contacts()
        self.apply_layout()
        self.query_one(MessageInput).focus()
        # Back in the terminal (or the app): what is on screen now counts as read.
        self.watch(self.app, "app_focus", lambda focused: self.back() if focused else None,
                   init=False)
        last = self.last_conversation()
        if last is not None:
            await self.open(last)

    # ------------------------------------------------------------ layout

    def on_resize(self) -> None:
        # F3/F4 choices hold until the terminal changes size; then its width decides again.
        self.side_wanted = self.members_wanted = None
        self.apply_layout()
        self.read_soon()

    def on_screen_resume(self) -> None:
        self.back()

    def apply_layout(self) -> None:
        """Show or hide the side and members panes for the terminal's width (or as the
        person chose with F3/F4)."""
        width = self.size.width or self.app.size.width
        side = self.query_one("#side")
        side.display = self.side_wanted if self.side_wanted is not None else width >= NARROW_SIDE
        side.styles.width = SIDE_WIDE if width >= WIDE else SIDE_NARROW
        members = self.query_one(MemberList)
        group = self.peer is not None and self.peer.startswith("#") \
            and self.client.group(self.peer) is not None
        wanted = self.members_wanted if self.members_wanted is not None \
            else width >= NARROW_MEMBERS
        members.display = group and wanted

    def action_toggle_side(self) -> None:
        """Hide or show the conversations and contacts pane."""
        self.side_wanted = not self.query_one("#side").display
        self.apply_layout()

    def action_toggle_members(self) -> None:
        """Hide or show a group's members pane."""
        self.members_wanted = not self.query_one(MemberList).display
        self.apply_layout()

    def action_redraw(self) -> None:
        """Draw the whole screen again (after something else wrote over it)."""
        self.app.refresh(repaint=True, layout=True)
        self.refresh(repaint=True, layout=True)
        for widget in self.query("*"):
            widget.refresh()

    # ------------------------------------------------------------ showing

    def say(self, text: str) -> None:
        """Show a line of help, error or progress above the input; it fades after a while."""
        line = self.query_one("#notice", Static)
        line.update(Content(text))
        line.display = bool(text)
        if self._notice_timer is not None:
            self._notice_timer.stop()
            self._notice_timer = None
        if text:
            self._notice_timer = self.set_timer(NOTICE_SECONDS + 2 * text.count("\n"),
                                                lambda: self.say(""))

    def notice(self) -> str:
        """The notice line's text."""
        return str(self.query_one("#notice", Static).render())

    def label(self, peer: str) -> str:
        """How a conversation is named: a display name, a group's name (also of a group
        left), or the user."""
        if peer.startswith("#") and self.client.group(peer) is None:
            name = self.group_names.get(peer[1:])
            return f"# {name} (left)" if name else peer
        return self.client.display_name(peer)

    async def refresh_conversations(self) -> None:
        """Redraw the conversation list from the client core (groups included)."""
        self._refresh_pending = False
        groups = ["#" + g["id"] for g in self.client.groups()]
        extra = [p for p in reversed(self.opened)] + groups
        conversations = self.client.conversations()
        conversation_list = self.query_one(ConversationList)
        await conversation_list.show(conversations, extra, self.peer, self.label)
        self.order = conversation_list.peers()
        unread = {c.peer: c.unread for c in conversations}
        mentioned = {c.peer for c in conversations if c.mentions} | self.mentions
        hotlist = [(n, self.label(p).replace("# ", "#"), unread[p], p in mentioned)
                   for n, p in enumerate(self.order, 1) if unread.get(p) and p != self.peer]
        self.query_one(ConnectionBar).set_hotlist(hotlist)

    def refresh_conversations_soon(self) -> None:
        """Redraw the list shortly, once for a burst of events."""
        if not self._refresh_pending:
            self._refresh_pending = True
            self.set_timer(0.05, self.refresh_conversations)

    async def refresh_contacts(self) -> None:
        """Redraw the contacts pane, and the members pane of an open group."""
        contacts = self.client.contacts()
        await self.query_one(ContactList).show(contacts, self.avatars(contacts))
        self.refresh_members()

    def avatars(self, contacts: list[dict[str, Any]]) -> dict[str, str]:
        """Avatar pictures already fetched, by user; the others are fetched in the background
        (once each) and the pane redrawn when they arrive."""
        found: dict[str, str] = {}
        for contact in contacts:
            avatar = contact.get("avatar")
            if not isinstance(avatar, str) or not avatar:
                continue
            directory = os.path.join(platformdirs.user_cache_dir("dim-chat"), "avatars",
                                     safe_name(avatar))
            path = os.path.join(directory, "avatar")
            if os.path.exists(path):
                found[contact["user"]] = path
            elif avatar not in self._fetching_avatars:
                self._fetching_avatars.add(avatar)
                self.run_worker(self.fetch_avatar(avatar, directory), exclusive=False)
        return found

    async def fetch_avatar(self, avatar: str, directory: str) -> None:
        """Fetch one avatar picture into the cache, then redraw the contacts."""
        try:
            await wait_for(self.client.save_file({"id": avatar, "name": "avatar"}, None, directory))
        except Exception:
            return  # initials it is
        await self.refresh_contacts()

    def online(self, user: str) -> bool | None:
        """Whether ``user`` is online: a contact's live presence, else what the gateway said
        when last asked (None if never asked)."""
        state = self.client.is_online(user)
        return state if state is not None else self.presence_hint.get(user)

    def refresh_members(self) -> None:
        """Redraw the members pane and title of the open conversation."""
        group = self.client.group(self.peer) if self.peer and self.peer.startswith("#") else None
        self.query_one(MemberList).show(group, self.client.display_name, self.client.is_online,
                                        self.me, MEMBERS_LEGEND)
        self.query_one("#title", Static).update(Content(self.title_text()))
        self.apply_layout()

    def refresh_people(self) -> None:
        """Have the core fetch contacts, groups and profile again; events redraw.  The
        presence of a non-contact in the open conversation is asked again too.

        Returns nothing on purpose: a timer awaits what its callback returns, and a
        Deferred still in flight cannot be awaited by an asyncio task.
        """
        self.client.refresh_people()
        if self.peer is not None and not self.peer.startswith("#") \
                and self.client.is_online(self.peer) is None:
            self.check_user(self.peer)

    def title_text(self) -> str:
        """The line above the open conversation."""
        peer = self.peer
        if peer is None:
            return "No conversation: /open USER or pick one (F1 help)"
        if peer.startswith("#"):
            group = self.client.group(peer)
            if group is None:
                name = self.group_names.get(peer[1:])
                return f"Group {name} (you left it)" if name else f"Group {peer} (not a member)"
            return f"Group {group['name']} ({len(group.get('members', []))} members)"
        name = self.client.display_name(peer)
        title = f"Conversation with {peer}" + (f" - {name}" if name != peer else "")
        online = self.online(peer)
        if online is not None:
            title += " (online)" if online else " (offline)"
        return title

    def typing_text(self) -> str:
        """Who is typing in the open conversation, in words."""
        who = [self.client.display_name(u) for u in self.typing.get(self.peer or "", {})]
        if not who:
            return ""
        if len(who) == 1:
            return f"{who[0]} is typing..."
        return f"{', '.join(who[:-1])} and {who[-1]} are typing..."

    def show_typing(self) -> None:
        """Redraw the typing line."""
        self.query_one("#typing", Static).update(Content(self.typing_text()))

    def on_message_log_below_changed(self, event: MessageLog.BelowChanged) -> None:
        below = self.query_one("#below", Static)
        below.display = event.count > 0
        below.update(Content(f"↓ {event.count} new below (End or PgDn)" if event.count else ""))

    async def open(self, peer: str) -> None:
        """Open the conversation with ``peer``: at once the messages this device keeps and
        what is pending, then the server's newest page merged in when it comes (see
        :meth:`merge_newest`); the first unread message is shown with a line above it."""
        unread = self.unread_of(peer)
        if peer != self.peer:
            self.cancel_compose()
        read_seq = self.client.read_seq(peer)
        self.peer = peer
        self.mentions.discard(peer)
        if peer not in self.opened and not peer.startswith("#"):
            self.opened.append(peer)
        group = self.client.group(peer) if peer.startswith("#") else None
        recipients = max(0, len(group.get("members", [])) - 1) if group else None
        log = self.query_one(MessageLog)
        await log.reset(self.me, self.client.display_name, recipients)
        # Nothing is read from the cache's messages alone: it may lack some of the server's.
        self._vouched = None
        self.refresh_members()
        self.show_typing()
        try:
            history = self.client.cached(peer, HISTORY_PAGE)
        except Exception as e:  # the cache failed: the server's page may still come
            history = []
            self.say(f"Could not load history: {e}")
        await log.add_older(history)
        for out in self.client.pending(peer):
            await log.add_outgoing(out, self.me)
        log.apply_receipts(self.client.receipts([r.mid for r in log.by_id.values() if r.mid]))
        first_new = self.first_unread(history, unread, read_seq)
        if first_new is not None and first_new is not history[0]:
            log.mark_new_after(first_new.seq - 1)  # a line above everything tells nothing
        for text, ts in self.group_events.pop(peer, []):
            await log.add_info(text, ts)
        await self.refresh_conversations()
        log.anchor()
        if first_new is not None:
            # More unread than fit: start at the first of them, not below them all.
            self.call_after_refresh(self.show_first_new, peer, first_new.seq)
        else:
            log.scroll_end(animate=False)
        self.query_one(MessageInput).focus()
        self.remember_conversation(peer)
        await self.fetch_newest(peer)

    def unread_of(self, peer: str) -> int:
        """How many messages of ``peer``'s conversation are unread."""
        return next((c.unread for c in self.client.conversations() if c.peer == peer), 0)

    def first_unread(self, messages: list[ChatMessage], unread: int,
                     read_seq: int) -> ChatMessage | None:
        """Of ``messages`` (oldest first), the first of the ``unread`` newest from others
        above ``read_seq``: where the "new messages" line goes."""
        if not unread:
            return None
        others = [m for m in messages if m.sender != self.me and m.seq > read_seq]
        return others[-min(unread, len(others))] if others else None

    async def fetch_newest(self, peer: str) -> None:
        """Ask for the server's newest page of the open conversation ``peer`` and merge it:
        at once if it is there already, else when it comes, in the background (the person
        reads and types meanwhile); until then nothing is marked read."""
        self._page_worker = None
        if peer in self._fetching:
            return
        self._fetching.add(peer)
        try:
            d = self.client.newest(peer, HISTORY_PAGE)
        except Exception:
            self._fetching.discard(peer)
            raise
        scrolls = self._scrolls
        if isinstance(d, Deferred) and not d.called:
            self._page_worker = self.run_worker(self.merge_newest(peer, d, scrolls),
                                                exclusive=False)
        else:
            await self.merge_newest(peer, d, scrolls)

    async def merge_newest(self, peer: str, d: Any, scrolls: int) -> None:
        """Merge the server's newest page into the open conversation ``peer``, each message
        once.  Not scrolled up: older messages come in above the view and the view stays at
        the bottom; scrolled up: the messages in view stay where they are.  The cache's
        messages older than a whole page may hide gaps: those not scrolled to are taken away
        (scrolling back loads them again, gaps filled).  From then on what is on screen is
        marked read.  Offline the cache's messages stay, and the page is asked for again
        once connected."""
        try:
            page = await wait_for(d)
        except Exception:
            if self.peer == peer:
                self.say("Offline: these are the messages kept on this device; newer and "
                         "older ones load when connected.")
            return
        finally:
            self._fetching.discard(peer)
        logs = self.query(MessageLog)
        if self.peer != peer or not logs:
            return  # another conversation opened meanwhile
        log = logs.first()
        page = sorted(page, key=lambda m: m.seq)
        at_bottom = log.at_bottom and log.is_anchored
        stale = page[0].seq if page and len(page) >= HISTORY_PAGE else None
        if stale is not None and at_bottom:
            await log.drop_before(stale)
        await log.add_older(page, keep_view=not at_bottom)
        if stale is not None and not at_bottom:
            await self.fill_below(peer, stale)
        if log.new_line_at() is None:
            first_new = self.first_unread(page, self.unread_of(peer),
                                          self.client.read_seq(peer))
            if first_new is not None and log.oldest_seq is not None \
                    and first_new.seq > log.oldest_seq:
                log.mark_new_after(first_new.seq - 1)
                if scrolls == self._scrolls and at_bottom:
                    self.call_after_refresh(self.show_first_new, peer, first_new.seq)
        self._vouched = peer
        self.read_soon()

    async def fill_below(self, peer: str, seq: int) -> None:
        """The kept messages older than ``seq`` (where the server's page starts) are in view:
        fill the gaps they may hide with the server's pages before ``seq``, back to the
        oldest of them (at most :data:`JUMP_PAGES` pages), the view where it is."""
        log = self.query_one(MessageLog)
        oldest = log.oldest_seq
        for _ in range(JUMP_PAGES):
            if oldest is None or seq <= oldest or self.peer != peer:
                return
            try:
                older = await wait_for(self.client.history(peer, seq, HISTORY_PAGE * 2))
            except Exception:
                return
            if self.peer != peer or not older:
                return
            await log.add_older(older, keep_view=True)
            seq = min(m.seq for m in older)
            if len(older) < HISTORY_PAGE * 2:
                return

    def show_first_new(self, peer: str, seq: int, opening: bool = True,
                       scrolls: int | None = None) -> None:
        """Scroll so the first unread message ``seq`` is at the top: when opening, unless
        everything fits below it; else only if it is above the view and the person has not
        scrolled since ``scrolls``."""
        log = self.query_one(MessageLog)
        row = log.by_seq.get(seq)
        if peer == self.peer and row is not None and scrolls in (None, self._scrolls):
            y = max(0, row.virtual_region.y)
            if y < (log.max_scroll_y if opening else log.scroll_y):
                log.scroll_to(y=y, animate=False, immediate=True)
            elif opening:
                log.scroll_end(animate=False, immediate=True)
        self.read_soon()

    # ------------------------------------------------------------ read marks

    def attending(self) -> bool:
        """Whether the person can see the open conversation: the chat is the screen shown
        and the terminal has focus."""
        return self.peer is not None and self.app.app_focus and self.app.screen is self

    def back(self) -> None:
        """The person looks at the chat again: start at the first message that came while
        away if it scrolled out of view above, then mark what shows."""
        logs = self.query(MessageLog)
        seq = logs.first().new_line_at() if logs else None
        if self.peer is not None and seq is not None and seq > self.client.read_seq(self.peer):
            self.call_after_refresh(self.show_first_new, self.peer, seq, False, self._scrolls)
        else:
            self.read_soon()

    def read_soon(self) -> None:
        """Mark what is on screen read once the screen is drawn (once for a burst)."""
        if not self._read_pending:
            self._read_pending = True
            self.call_after_refresh(self.mark_shown_read)

    def mark_shown_read(self) -> None:
        """Tell the core the open conversation is read up to the newest message on screen,
        only while this screen shows and the app has the person's attention."""
        self._read_pending = False
        if self.peer is None or not self.attending() or self._vouched != self.peer:
            return  # the server's page not merged yet: the cache may lack some messages
        logs = self.query(MessageLog)
        if not logs:
            return
        seq = logs.first().newest_visible_seq()
        if seq is not None and self.client.mark_read(self.peer, seq):
            self.refresh_conversations_soon()

    def on_message_log_viewed(self, event: MessageLog.Viewed) -> None:
        self.read_soon()

    # ------------------------------------------------------------ reply, edit, recall, react

    def show_compose(self, text: str | None) -> None:
        """Show (or, with None, hide) the line above the input saying what Enter will do."""
        line = self.query_one("#compose", Static)
        line.update(Content(text or ""))
        line.display = bool(text)

    def cancel_compose(self) -> None:
        """Stop replying or editing (an edit's text leaves the input)."""
        if self.editing is not None:
            self.query_one(MessageInput).clear()
        self.replying = self.editing = None
        self.show_compose(None)

    def start_reply(self, row: MessageRow) -> None:
        """The next message answers ``row``'s."""
        if self.editing is not None:
            self.cancel_compose()
        self.replying = row.mid
        quote = quote_of(row.label, row.body, row.kind, row.file, row.recalled)
        self.show_compose(f"↳ Replying to {quote}  (Escape cancels)")
        self.query_one(MessageInput).focus()

    def start_edit(self, row: MessageRow) -> None:
        """Put one's own message ``row`` into the input to edit; Enter saves it."""
        assert row.mid is not None
        self.replying = None
        self.editing = (row.mid, row.shown_body)
        box = self.query_one(MessageInput)
        box.text = row.shown_body
        box.move_cursor(box.document.end)
        self.show_compose("✎ Editing your message: Enter saves, Escape cancels")
        box.focus()

    def on_message_input_edit_last(self, event: MessageInput.EditLast) -> None:
        row = self.query_one(MessageLog).last_own_editable()
        if row is None:
            self.say("No message of yours to edit here.")
            return
        self.start_edit(row)

    def on_message_input_select(self, event: MessageInput.Select) -> None:
        log = self.query_one(MessageLog)
        if log.select(event.step) is None:
            return
        log.focus()
        self.say("r reply, e edit, d recall, + react; up/down move, Escape back.")

    def on_message_log_selection_done(self, event: MessageLog.SelectionDone) -> None:
        self.query_one(MessageInput).focus()

    def on_message_log_act(self, event: MessageLog.Act) -> None:
        row = event.row
        log = self.query_one(MessageLog)
        if row.mid is None:
            self.say("That message is not sent yet.")
            return
        if event.action == "reply":
            log.clear_selection()
            self.start_reply(row)
        elif event.action == "react":
            if row.recalled:
                self.say("That message was recalled.")
                return
            mine = [e for e, users in row.shown_reactions()[0].items() if self.me in users]
            mid = row.mid
            self.app.push_screen(ReactionScreen(mine),
                                 lambda emoji: self.react_chosen(mid, emoji, mine))
        elif not row.own:
            self.say(f"Only your own messages can be {event.action}ed.")
        elif row.recalled:
            self.say("That message was recalled.")
        elif event.action == "edit":
            if row.kind != "text":
                self.say("Only text messages can be edited.")
                return
            log.clear_selection()
            self.start_edit(row)
        elif event.action == "recall":
            mid = row.mid
            what = quote_of(row.label, row.body, row.kind, row.file)
            self.app.push_screen(
                ConfirmScreen("Recall this message?", what,
                              "Everyone in the conversation sees it taken back."),
                lambda yes: self.recall_confirmed(mid, bool(yes)))

    def save_edit(self, text: str) -> None:
        """Save the edit under way with ``text`` (nothing if unchanged)."""
        assert self.editing is not None
        mid, before = self.editing
        self.replying = self.editing = None
        self.show_compose(None)
        if text.strip() == before.strip():
            self.say("Not changed.")
            return
        self.run_change(self.client.edit(mid, text), "Not edited", mid, "edit", text)

    def recall_confirmed(self, mid: str, yes: bool) -> None:
        """Recall ``mid`` if the person said yes."""
        self.query_one(MessageLog).clear_selection()
        self.query_one(MessageInput).focus()
        if yes:
            self.run_change(self.client.recall(mid), "Not recalled", mid, "recall", True)

    def react_chosen(self, mid: str, emoji: str | None, mine: list[str]) -> None:
        """Add the chosen reaction, or take it back if it was the person's already."""
        self.query_one(MessageLog).clear_selection()
        self.query_one(MessageInput).focus()
        if emoji:
            on = emoji not in mine
            self.run_change(self.client.react(mid, emoji, on), "No reaction", mid,
                            ("reaction", emoji), on)

    def run_change(self, d: Any, failed: str, mid: str, key: Any, value: Any) -> None:
        """Show an edit, recall or reaction on its message at once, pending ("editing…",
        "recalling…", the reaction dimmed), and wait for it in the background (it may wait
        for the connection): stored, the message shows as the core has it; failed, as it
        was, and the reason is said."""
        token = self.query_one(MessageLog).show_pending(mid, key, value)

        async def wait() -> None:
            try:
                await wait_for(d)
            except errors.DimError as e:
                self.say(f"{failed}: {e.message}")
            except Exception as e:
                self.say(f"{failed}: {e}")
            finally:
                logs = self.query(MessageLog)
                if logs:
                    logs.first().settle(mid, key, token, self.client.message(mid))
        self.run_worker(wait(), exclusive=False)

    # ------------------------------------------------------------ the last conversation

    def _state_key(self) -> str:
        gateway = getattr(self.app, "gateway_url", None)
        return f"{self.me}@{gateway}" if gateway else self.me

    def last_conversation(self) -> str | None:
        """The conversation open when the person last left, if it can be opened again."""
        if self.state_path is None:
            return None
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        peer = state.get("last", {}).get(self._state_key()) if isinstance(state, dict) else None
        if not isinstance(peer, str) or not peer:
            return None
        if peer.startswith("#") and self.client.group(peer) is None:
            return None
        return peer

    def remember_conversation(self, peer: str | None) -> None:
        """Keep the open conversation, to open it again at the next start."""
        if self.state_path is None:
            return
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict):
            state = {}
        last = state.setdefault("last", {})
        if last.get(self._state_key()) == peer:
            return
        last[self._state_key()] = peer
        try:
            os.makedirs(os.path.dirname(self.state_path) or ".", exist_ok=True)
            with open(self.state_path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(state, f)
            os.replace(self.state_path + ".tmp", self.state_path)
        except OSError:
            pass  # remembering is a convenience

    # ------------------------------------------------------------ the person

    async def on_message_log_older_wanted(self, event: MessageLog.OlderWanted) -> None:
        await self.action_older()

    async def on_conversation_list_opened(self, event: ConversationList.Opened) -> None:
        await self.open(event.peer)

    async def on_contact_list_opened(self, event: ContactList.Opened) -> None:
        await self.open(event.user)

    async def on_contact_list_answered(self, event: ContactList.Answered) -> None:
        if event.accept:
            await self.add_contact(event.user)
        else:
            await self.remove_contact(event.user)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        text = event.text_area.text
        if self.peer is not None and text.strip() and not text.startswith("/"):
            self.client.typing(self.peer)

    async def on_message_input_scroll(self, event: MessageInput.Scroll) -> None:
        self._scrolls += 1
        log = self.query_one(MessageLog)
        if event.where in ("page_up", "line_up", "top") and log.scroll_y <= 0 and log.by_seq:
            await self.action_older(quiet=True)  # at the top already: scroll back in time
            return
        if event.where == "page_up":
            log.scroll_page_up(animate=False)
        elif event.where == "page_down":
            log.scroll_page_down(animate=False)
        elif event.where == "line_up":
            log.scroll_up(animate=False)
        elif event.where == "line_down":
            log.scroll_down(animate=False)
        elif event.where == "top":
            log.scroll_home(animate=False)
        else:
            log.scroll_end(animate=False)

    async def on_message_input_submitted(self, event: MessageInput.Submitted) -> None:
        text = event.text.rstrip("\n")
        if self.editing is not None:
            self.save_edit(text)
        elif text.startswith("/") and not text.startswith("//"):
            await self.command(text)
        elif self.peer is None:
            self.say("Open a conversation first: /open USER (or /help).")
        else:
            reply_to = self.replying
            if await self.send(self.peer, text[1:] if text.startswith("//") else text,
                               reply_to=reply_to) and reply_to == self.replying:
                self.cancel_compose()

    def mentions_in(self, peer: str, text: str) -> list[str]:
        """The members of group ``peer`` that ``text`` mentions with @NAME (none outside a
        group)."""
        group = self.client.group(peer) if peer.startswith("#") else None
        if group is None:
            return []
        members = set(group.get("members", []))
        return list(dict.fromkeys(n for n in MENTION.findall(text) if n in members))

    async def send(self, peer: str, text: str, reply_to: str | None = None) -> bool:
        """Send ``text`` to ``peer`` (answering ``reply_to``, with the group members it
        mentions) and show it if that conversation is open.  A message refused at once goes
        back into the input, so nothing typed is lost."""
        try:
            out = self.client.send(peer, text, reply_to=reply_to,
                                   mentions=self.mentions_in(peer, text) or None)
        except errors.DimError as e:
            box = self.query_one(MessageInput)
            if peer == self.peer and not box.text:
                box.text = text
                box.move_cursor(box.document.end)
                self.say(f"Not sent: {e.message} (yours is {len(text.encode())} bytes); "
                         "it is back in the input.")
            else:
                self.say(f"Not sent: {e.message}")
            return False
        if peer == self.peer:
            await self.query_one(MessageLog).add_outgoing(out, self.me)
        elif peer not in self.opened:
            self.opened.append(peer)
        self.refresh_conversations_soon()
        return True

    async def call(self, d: Any, done: str | None = None) -> Any:
        """Await a client-core call; say ``done`` on success, the reason on failure (None)."""
        try:
            result = await wait_for(d)
        except errors.DimError as e:
            self.say(f"{e.code}: {e.message}")
            return None
        except Exception as e:  # the gateway cannot be reached
            self.say(f"Failed: {e}")
            return None
        if done:
            self.say(done)
        return result if result is not None else True

    async def command(self, text: str) -> None:
        """Run one slash command."""
        parts = text.split(maxsplit=2)
        name, args = parts[0].lower(), parts[1:]
        rest = text[len(parts[0]):].strip()
        if name == "/open" and rest:
            await self.open_command(rest)
        elif name == "/msg" and len(args) == 2:
            if await self.user_exists(args[0]) and await self.send(args[0], args[1]):
                self.say(f"Sent to {args[0]}.")
        elif name in ("/add", "/accept") and len(args) == 1:
            await self.add_contact(args[0])
        elif name in ("/remove", "/decline") and len(args) == 1:
            await self.remove_contact(args[0])
        elif name == "/search" and rest:
            await self.search_messages(rest)
        elif name == "/who" and rest:
            await self.search(rest)
        elif name == "/profile":
            self.app.push_screen(ProfileScreen(self.client.own_profile()), self.profile_saved)
        elif name == "/avatar" and rest:
            path = os.path.expanduser(rest.strip("'\""))
            if not os.path.isfile(path):
                self.say(f"No such file: {path}")
            else:
                await self.call(self.client.set_avatar(path, None), "Avatar set.")
        elif name == "/group" and args:
            await self.group_command(rest)
        elif name == "/send" and rest:
            await self.send_file(rest)
        elif name == "/save":
            await self.action_save(rest or None)
        elif name == "/view":
            await self.view_image(rest or None)
        elif name == "/help":
            if rest:
                self.say(command_help(rest) or f"No command {rest!r}; /help lists them.")
            else:
                self.action_help()
        elif name == "/quit":
            await self.app.action_quit()
        elif name == "/retry":
            self.action_retry()
        elif name == "/older":
            await self.action_older()
        elif name == "/reconnect":
            self.action_reconnect()
        elif name == "/redraw":
            self.action_redraw()
        elif name == "/logout":
            self.post_message(self.LogoutRequested())
        elif name in BY_NAME:
            self.say(f"Usage: {command_help(name)}")
        else:
            self.say(f"Unknown command {text!r}; /help lists them.")

    def action_help(self) -> None:
        """Every command and key, in a dialog that scrolls."""
        self.app.push_screen(HelpScreen())

    def action_reconnect(self) -> None:
        """Connect again now instead of waiting out the countdown."""
        if self.client.reconnect():
            self.say("Reconnecting now.")
        else:
            self.say("Not logged in.")

    async def open_command(self, rest: str) -> None:
        """/open USER or /open #GROUP: only what exists is opened."""
        if rest.startswith("#"):
            peer = self.group_peer(rest)
            if peer is not None:
                await self.open(peer)
            return
        user = rest.split()[0]
        if await self.user_exists(user):
            await self.open(user)

    async def user_exists(self, user: str) -> bool:
        """Whether ``user`` can be written to: False (and said) if the gateway knows no
        such user; True when it cannot be asked (the message waits in the outbox)."""
        if self.client.is_online(user) is not None or user == self.me:
            return True
        try:
            info = await wait_for(self.client.user_info(user))
        except errors.NotFound:
            self.say(f"There is no user {user!r}: both people must register before /open.")
            return False
        except Exception:
            return True
        if isinstance(info, dict) and "online" in info:
            self.presence_hint[user] = bool(info["online"])
        return True

    def group_peer(self, text: str) -> str | None:
        """``#id`` of the group named (by id, name or former name) in ``text``, which starts
        with #; None (and said) if there is no such group."""
        wanted = text[1:].strip()
        if self.client.group(wanted) is not None:
            return "#" + wanted
        for group in self.client.groups():
            if group.get("name") == wanted:
                return "#" + group["id"]
        gid = self.old_group_names.get(wanted)
        if gid is not None and self.client.group(gid) is not None:
            self.say(f"#{wanted} is now called {self.client.group(gid)['name']}.")  # type: ignore[index]
            return "#" + gid
        names = ", ".join("#" + str(g.get("name")) for g in self.client.groups()) or "none"
        self.say(f"You are in no group {text.strip()!r} (yours: {names}).")
        return None

    # ------------------------------------------------------------ switching

    def action_nth_conversation(self, n: int) -> None:
        """Open conversation ``n`` (from 1) of the list."""
        if 1 <= n <= len(self.order):
            self.run_worker(self.open(self.order[n - 1]), exclusive=False)

    def _step(self, step: int) -> None:
        if not self.order:
            return
        index = self.order.index(self.peer) if self.peer in self.order else -1
        self.run_worker(self.open(self.order[(index + step) % len(self.order)]),
                        exclusive=False)

    def action_next_conversation(self) -> None:
        """Open the next conversation of the list."""
        self._step(1)

    def action_previous_conversation(self) -> None:
        """Open the previous conversation of the list."""
        self._step(-1)

    def action_next_active(self) -> None:
        """Open the next conversation with unread messages (mentions first)."""
        conversations = self.client.conversations()
        unread = {c.peer for c in conversations if c.unread and c.peer != self.peer}
        if not unread:
            self.say("No conversation with unread messages.")
            return
        calls = {c.peer for c in conversations if c.mentions} | self.mentions
        mentioned = [p for p in self.order if p in unread and p in calls]
        ordered = mentioned + [p for p in self.order if p in unread and p not in mentioned]
        target = ordered[0] if ordered else sorted(unread)[0]
        self.run_worker(self.open(target), exclusive=False)

    # ------------------------------------------------------------ completion

    def known_users(self) -> list[str]:
        """User names the person might mean: contacts, members, conversation peers."""
        users: list[str] = [c["user"] for c in self.client.contacts()]
        for group in self.client.groups():
            users += group.get("members", [])
        users += [p for p in self.order if not p.startswith("#")]
        return [u for u in dict.fromkeys(users) if u != self.me]

    def completions(self, text: str) -> tuple[int, list[str]]:
        """Tab completion of the input's last word: commands, users, #groups, /help topics."""
        start = max(text.rfind(" "), text.rfind("\n")) + 1
        word = text[start:]
        head = text[:start]
        if start == 0 and word.startswith("/"):
            return 0, [n + " " for n in command_names(word)]
        first = head.split(maxsplit=1)[0].lower() if head.strip() else ""
        if first == "/help" and head.strip() == "/help":
            return start, [n + " " for n in command_names("/" + word.lstrip("/"))]
        if word.startswith("@"):
            group = self.client.group(self.peer) if self.peer and self.peer.startswith("#") \
                else None
            members = [str(u) for u in (group or {}).get("members", []) if u != self.me]
            return start, ["@" + u + " " for u in members
                           if u.lower().startswith(word[1:].lower())]
        if word.startswith("#"):
            names = [str(g.get("name")) for g in self.client.groups()]
            return start, ["#" + n + " " for n in names if n.lower().startswith(word[1:].lower())]
        if first in ("/open",) and len(head.split()) == 1:
            users = [u for u in self.known_users() if u.lower().startswith(word.lower())]
            groups = ["#" + str(g.get("name")) for g in self.client.groups()
                      if str(g.get("name")).lower().startswith(word.lower())]
            return start, [u + " " for u in users + groups]
        if not word:
            return start, []
        users = [u for u in self.known_users() if u.lower().startswith(word.lower())]
        suffix = ": " if start == 0 else " "
        return start, [u + suffix for u in users]

    # ------------------------------------------------------------ people

    async def add_contact(self, user: str) -> None:
        """Ask ``user`` to be a contact, or accept their request."""
        contact = await self.call(self.client.add_contact(user))
        if contact:
            if isinstance(contact, dict) and contact.get("pending") == "out":
                self.say(f"Asked {user} to be a contact.")
            else:
                self.say(f"{user} is a contact.")
            await self.refresh_contacts()

    async def remove_contact(self, user: str) -> None:
        """Remove a contact, or decline or withdraw a request."""
        if await self.call(self.client.remove_contact(user), f"Removed {user}."):
            await self.refresh_contacts()

    async def search(self, text: str) -> None:
        """Find people and show them in a dialog."""
        users = await self.call(self.client.search_users(text))
        if users is None:
            return
        self.app.push_screen(SearchScreen(text, users if isinstance(users, list) else []),
                             self.search_chosen)

    async def search_chosen(self, choice: tuple[str, str] | None) -> None:
        """What the person chose in the search dialog."""
        if choice is None:
            return
        action, user = choice
        if action == "open":
            await self.open(user)
        else:
            await self.add_contact(user)

    async def profile_saved(self, changes: dict[str, str] | None) -> None:
        """Save what the person changed in the profile dialog."""
        if not changes:
            return
        await self.call(self.client.update_profile(changes.get("name"), changes.get("status")),
                        "Profile saved.")

    # ------------------------------------------------------------ groups

    async def group_command(self, rest: str) -> None:
        """/group new NAME USER..., add USER, remove USER, leave, rename NAME."""
        words = rest.split()
        sub = words[0].lower()
        group = self.peer if self.peer and self.peer.startswith("#") else None
        if sub == "new" and len(words) >= 2:
            created = await self.call(self.client.create_group(words[1], words[2:]))
            if isinstance(created, dict) and "id" in created:
                count = len(created.get("members", []))
                self.say(f"Made group {created['name']} with {count} members.")
                await self.refresh_conversations()
                await self.open("#" + created["id"])
            return
        if group is None or self.client.group(group) is None:
            self.say("Open a group first (or /group new NAME USER...).")
            return
        if sub == "add" and len(words) == 2:
            await self.call(self.client.add_member(group, words[1]), f"Added {words[1]}.")
        elif sub == "remove" and len(words) == 2:
            await self.call(self.client.remove_member(group, words[1]), f"Removed {words[1]}.")
        elif sub == "leave" and len(words) == 1:
            if await self.call(self.client.leave_group(group), "You left the group."):
                self.peer = None
                await self.query_one(MessageLog).reset(self.me)
                self.refresh_members()
                self.remember_conversation(None)
        elif sub == "rename" and len(words) >= 2:
            name = rest.split(maxsplit=1)[1]
            await self.call(self.client.rename_group(group, name), f"Renamed to {name}.")
        else:
            self.say("Usage: /group new NAME USER... | add USER | remove USER | leave "
                     "| rename NAME")
            return
        self.refresh_members()
        await self.refresh_conversations()

    def note_groups(self) -> list[tuple[str, str]]:
        """Compare the groups with how they were last seen: the lines to show, as
        ``(peer, text)`` (joins, leaves, renames, and the person's own joining or leaving)."""
        now: dict[str, dict[str, Any]] = {
            g["id"]: {"name": g.get("name"), "members": list(g.get("members", []))}
            for g in self.client.groups()}
        for gid, g in now.items():
            old = self.group_names.get(gid)
            if old is not None and old != g["name"]:
                self.old_group_names[str(old)] = gid
            self.group_names[gid] = str(g["name"])
        before, self._groups_seen = self._groups_seen, now
        if before is None:
            return []
        name = self.client.display_name
        lines: list[tuple[str, str]] = []
        for gid, g in now.items():
            peer = "#" + gid
            was = before.get(gid)
            if was is None:
                lines.append((peer, f"you are in the group {g['name']}"))
                continue
            if was["name"] != g["name"]:
                lines.append((peer, f"the group was renamed from {was['name']} to {g['name']}"))
            for user in g["members"]:
                if user not in was["members"]:
                    lines.append((peer, f"{name(user)} joined"))
            for user in was["members"]:
                if user not in g["members"]:
                    lines.append((peer, f"{name(user)} left"))
        for gid, g in before.items():
            if gid not in now:
                lines.append(("#" + gid, f"you are no longer in {g['name']}"))
        return lines

    async def show_group_changes(self) -> None:
        """Put join, leave and rename lines into the groups they concern."""
        ts = int(time.time() * 1000)
        for peer, text in self.note_groups():
            if peer == self.peer:
                await self.query_one(MessageLog).add_info(text, ts)
            else:
                self.group_events.setdefault(peer, []).append((text, ts))

    # ------------------------------------------------------------ files

    async def send_file(self, path: str) -> None:
        """Upload ``path`` with a progress bar, then send it to the open conversation."""
        if self.peer is None:
            self.say("Open a conversation first.")
            return
        path = os.path.expanduser(path.strip().strip("'\""))
        if not os.path.isfile(path):
            self.say(f"No such file: {path}")
            return
        bar = self.query_one(TransferBar)
        name = os.path.basename(path)
        bar.start(f"Uploading {name} ", os.path.getsize(path))
        try:
            out = await self.call(self.client.send_file(self.peer, path, bar.advance_to))
        finally:
            bar.finish()
        if isinstance(out, E.OutgoingMessage):
            self.say(f"Uploaded {name} ({human_size(os.path.getsize(path))}).")
            if out.peer() == self.peer:
                await self.query_one(MessageLog).add_outgoing(out, self.me)

    async def action_save(self, name: str | None = None) -> None:
        """Save the newest file of the open conversation (or the one called ``name``)."""
        files = self.query_one(MessageLog).files()
        if name:
            files = [f for f in files if f.get("name") == name]
        if not files:
            self.say("No file to save here." if not name else f"No file called {name!r} here.")
            return
        file = files[-1]
        bar = self.query_one(TransferBar)
        bar.start(f"Saving {file.get('name')} ", int(file.get("size") or 0))
        try:
            path = await self.call(self.client.save_file(file, bar.advance_to))
        finally:
            bar.finish()
        if isinstance(path, str):
            self.say(f"Saved {file.get('name')} to {path}")

    async def view_image(self, name: str | None = None) -> None:
        """Show the newest image of the open conversation (or the one called ``name``),
        fetched once into the cache directory."""
        images = [f for f in self.query_one(MessageLog).files()
                  if str(f.get("mime", "")).startswith("image/")]
        if name:
            images = [f for f in images if f.get("name") == name]
        if not images:
            self.say("No image to view here." if not name else f"No image called {name!r} here.")
            return
        file = images[-1]
        directory = os.path.join(platformdirs.user_cache_dir("dim-chat"), "images",
                                 safe_name(str(file["id"])))
        path = os.path.join(directory, safe_name(str(file.get("name") or file["id"])))
        if not os.path.exists(path):
            bar = self.query_one(TransferBar)
            bar.start(f"Fetching {file.get('name')} ", int(file.get("size") or 0))
            try:
                fetched = await self.call(self.client.save_file(file, bar.advance_to, directory))
            finally:
                bar.finish()
            if not isinstance(fetched, str):
                return
            path = fetched
        size = human_size(int(file.get("size") or 0))
        self.app.push_screen(ImageScreen(path, f"{file.get('name')} ({size})"))

    # ------------------------------------------------------------ others

    def check_user(self, peer: str) -> None:
        """Ask the gateway, without blocking, whether ``peer`` (not a contact) is online,
        and show it in the title."""
        async def check() -> None:
            try:
                info = await wait_for(self.client.user_info(peer))
            except Exception:
                return
            if isinstance(info, dict) and "online" in info:
                self.presence_hint[peer] = bool(info["online"])
            if self.peer == peer:
                self.query_one("#title", Static).update(Content(self.title_text()))
        self.run_worker(check(), exclusive=False)

    def action_focus_contacts(self) -> None:
        """Move to the contacts pane (a accepts, d declines, Enter opens)."""
        self.query_one(ContactList).focus()

    def action_focus_input(self) -> None:
        """Back to the message input; a reply or an edit under way is cancelled."""
        if self.replying is not None or self.editing is not None:
            self.cancel_compose()
            self.say("Cancelled.")
        self.query_one(MessageLog).clear_selection()
        self.query_one(MessageInput).focus()

    def action_retry(self) -> None:
        """Send the open conversation's failed messages again (not those refused for good)."""
        log = self.query_one(MessageLog)
        failed = log.failed_ids()
        if not failed:
            refused = log.failed_ids(retryable=False)
            self.say("Nothing to retry: the node refused those for good." if refused
                     else "Nothing to retry.")
            return
        forgotten = 0
        for id in failed:
            self._failed_said.discard(id)
            try:
                self.client.retry(id)
            except KeyError:  # the client core keeps only the writes that failed last
                forgotten += 1
        retried = len(failed) - forgotten
        said = [f"Retrying {retried} message(s)."] if retried else []
        if forgotten:
            said.append(f"{forgotten} failed too long ago to retry: send them again.")
        self.say(" ".join(said))

    async def action_older(self, quiet: bool = False) -> None:
        """Load older messages of the open conversation above what is shown, keeping the
        view where it is (``quiet``: say nothing when they came)."""
        if self.peer is None or self._loading_older:
            return
        log = self.query_one(MessageLog)
        before = log.oldest_seq
        if before is None or before <= 1:
            self.say("No older messages.")
            return
        self._loading_older = True
        try:
            older = await wait_for(self.client.history(self.peer, before, HISTORY_PAGE))
            added = await log.add_older(older, keep_view=True) if older else 0
        except Exception as e:
            self.say(f"Could not load older messages: {e}")
            return
        finally:
            self._loading_older = False
        if not added:
            self.say("No older messages.")
        elif not quiet:
            self.say(f"Loaded {added} older message(s).")

    # ------------------------------------------------------------ search

    async def search_messages(self, text: str) -> None:
        """Find one's messages containing ``text`` (on the server) and list them."""
        found = await self.call(self.client.search(text))
        if found is None:
            return
        self.app.push_screen(MessageSearchScreen(text, found if isinstance(found, list) else [],
                                                 self.me, self.label, self.client.display_name),
                             self.search_result_chosen)

    async def search_result_chosen(self, message: ChatMessage | None) -> None:
        """Open the conversation of the chosen result and jump to the message."""
        if message is not None:
            self.run_worker(self.jump(message), exclusive=False)

    async def jump(self, message: ChatMessage) -> None:
        """Open ``message``'s conversation and show it, loading older pages until it is."""
        peer = message.peer(self.me)
        if peer != self.peer:
            await self.open(peer)
            worker = self._page_worker
            if worker is not None:
                try:
                    await worker.wait()  # the newest page first, so the search pages under it
                except Exception:
                    pass
        log = self.query_one(MessageLog)
        for _ in range(JUMP_PAGES):
            oldest = log.oldest_seq
            if message.seq in log.by_seq or oldest is None or oldest <= message.seq:
                break
            try:
                older = await wait_for(self.client.history(peer, oldest, HISTORY_PAGE * 2))
            except Exception as e:
                self.say(f"Could not load older messages: {e}")
                return
            if not older or not await log.add_older(older):
                break
        else:
            if message.seq not in log.by_seq:
                # Shown with a hole below it, scrolling back would skip messages silently.
                self.say(f"That message is more than {JUMP_PAGES * HISTORY_PAGE * 2} messages "
                         "back: PgUp at the top loads more, then /search again.")
                return
        if message.seq not in log.by_seq:
            await log.add_older([message])  # within what is loaded: at its place
        self.call_after_refresh(self.show_found, peer, message.seq)

    def show_found(self, peer: str, seq: int) -> None:
        """Scroll to the message found (once laid out) and mark it."""
        if peer == self.peer:
            self.query_one(MessageLog).jump_to(seq)
            self.read_soon()

    # ------------------------------------------------------------ the client core

    def peer_typing(self, user: str, peer: str) -> None:
        """``user`` is typing in ``peer``: show it for 5 s after the last typing frame."""
        timers = self.typing.setdefault(peer, {})
        old = timers.get(user)
        if old is not None:
            old.stop()

        def clear() -> None:
            if timers.get(user) is timer:
                del timers[user]
                self.show_typing()
        timer = self.set_timer(TYPING_SHOWN, clear)
        timers[user] = timer
        if peer == self.peer:
            self.show_typing()

    def stopped_typing(self, user: str, peer: str) -> None:
        """``user`` sent a message in ``peer``: no longer typing there."""
        timer = self.typing.get(peer, {}).pop(user, None)
        if timer is not None:
            timer.stop()
            if peer == self.peer:
                self.show_typing()

    def mentions_me(self, body: str) -> bool:
        """Whether a message names the person (user or display name)."""
        text = body.lower()
        names = {self.me.lower(), self.client.display_name(self.me).lower()} - {""}
        return any(name in text for name in names)

    async def handle_event(self, event: Any) -> None:
        """Show one client-core event."""
        logs = self.query(MessageLog)
        if not logs:  # the screen is being taken down (the app is closing): nothing to show
            return
        log = logs.first()
        if isinstance(event, E.MessageReceived) and event.entry.is_change:
            return  # an edit, recall or reaction: told as MessageChanged of its message
        if isinstance(event, E.MessageChanged):
            if event.message.peer(self.me) == self.peer:
                log.update_message(event.message)
                if self.editing is not None and self.editing[0] == event.message.mid \
                        and event.message.recalled:
                    self.cancel_compose()
                    self.say("The message you were editing was recalled.")
            self.refresh_conversations_soon()
        elif isinstance(event, E.MessageReceived):
            peer = event.entry.peer(self.me)
            self.stopped_typing(event.entry.sender, peer)
            if peer == self.peer:
                line = log.new_line_at()
                if not self.attending() and event.entry.sender != self.me \
                        and (line is None or line <= self.client.read_seq(peer)):
                    # Unseen while away: the line shows where to read from on return.
                    log.mark_new_after(max(self.client.read_seq(peer), event.entry.seq - 1))
                await log.add_message(event.entry)
                self.read_soon()
            elif event.entry.sender != self.me:
                if self.me in (event.entry.mentions or []) \
                        or self.mentions_me(event.entry.body):
                    self.mentions.add(peer)
                self.post_message(self.Ring())
            self.refresh_conversations_soon()
        elif isinstance(event, E.MessageStatus):
            if event.message.peer() == self.peer:
                await log.add_outgoing(event.message, self.me)
            if event.state == E.FAILED and event.message.error \
                    and event.id not in self._failed_said:
                self._failed_said.add(event.id)
                how = "" if permanent(event.message.error) else " ctrl+r retries."
                self.say(f"Not sent: {event.message.error}.{how}")
            if event.state == E.SENT:
                self.refresh_conversations_soon()
        elif isinstance(event, E.Delivered):
            log.mark_delivered(event.mid, event.by)
        elif isinstance(event, E.ReadReceipt):
            log.mark_read(event.mid, event.by)
        elif isinstance(event, (E.ReadUpTo, UnreadChanged)):
            self.refresh_conversations_soon()
        elif isinstance(event, ConversationReadUpTo):
            # Read on another device: the same messages are no longer new here.
            line = log.new_line_at()
            if event.peer == self.peer and line is not None and event.seq >= line:
                log.mark_new_after(event.seq)
            self.refresh_conversations_soon()
        elif isinstance(event, E.PeerTyping):
            self.peer_typing(event.user, event.peer)
        elif isinstance(event, E.PresenceChanged):
            await self.refresh_contacts()
            self.refresh_conversations_soon()
        elif isinstance(event, E.RosterChanged):
            if event.what == "groups":
                await self.show_group_changes()
            if event.what in ("names", "profile", "contacts", "groups"):
                log.relabel()
            await self.refresh_contacts()
            self.refresh_conversations_soon()
        elif isinstance(event, E.Connected):
            if self.peer is not None and self._vouched != self.peer:
                await self.fetch_newest(self.peer)  # opened offline: the server's page now
            if self.peer is not None and not self.peer.startswith("#") \
                    and self.client.is_online(self.peer) is None:
                self.check_user(self.peer)
        elif isinstance(event, E.Notified):
            self.notified(event)
        elif isinstance(event, E.SyncFinished):
            self.refresh_conversations_soon()
        elif isinstance(event, E.ServerError) and not event.ref:
            self.say(f"Server: {event.code}: {event.message}")

    def notified(self, event: E.Notified) -> None:
        """Tell the person about a contact request or a new contact."""
        if event.event == "contact_request":
            who = event.fields.get("from", "someone")
            self.say(f"{who} asks to be your contact: /accept {who} (or a in the contacts pane).")
        elif event.event == "contact_added":
            self.say(f"{event.fields.get('user', 'someone')} is now a contact.")
