"""The chat screen: conversations and contacts on the left, the open conversation in the
middle, a group's members on the right, and the input at the bottom."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Awaitable

import platformdirs
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static, TextArea

from dim import errors
from dim.client import session as S
from dim.client.transfer import human_size, safe_name
from tui import wait_for
from tui.screens.image import ImageScreen
from tui.screens.profile import ProfileScreen
from tui.screens.search import SearchScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.contact_list import ContactList
from tui.widgets.conversation_list import ConversationList
from tui.widgets.member_list import MemberList
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MessageLog
from tui.widgets.transfer_bar import TransferBar

if TYPE_CHECKING:
    from tui.app import ChatCore

HELP = """Commands:
  /open USER          open the conversation with USER (/open #GROUP for a group)
  /msg USER TEXT      send TEXT to USER (without opening it)
  /add USER           ask USER to be a contact (or accept their request)
  /remove USER        remove a contact (or decline, or withdraw, a request)
  /accept USER, /decline USER   answer a contact request (also a, d in the contacts pane)
  /search TEXT        find people by user or display name
  /profile            edit your display name and status;  /avatar PATH  set your picture
  /group new NAME USER...   make a group;   /group add USER, /group remove USER,
  /group leave, /group rename NAME          change the open group
  /send PATH          upload a file or image and send it here
  /save [NAME]        save the newest (or the named) file here to Downloads (also ctrl+s)
  /view [NAME]        show the newest (or the named) image here
  /retry              send this conversation's failed messages again (also ctrl+r)
  /older              load older messages (also ctrl+o)
  /logout             log out and forget the saved login
  /help               this help
  /quit               leave (also ctrl+q)
Enter sends; ctrl+j or shift+enter starts a new line; tab moves between panes;
F2 goes to the contacts pane (a accepts, d declines, Enter opens), Escape back here."""

HISTORY_PAGE = 50
#: How long "is typing" stays without a new typing frame.
TYPING_SHOWN = 5.0
#: How often contacts, groups and the own profile are fetched again, in seconds.
PEOPLE_REFRESH = 60.0


class ChatScreen(Screen[None]):
    """Conversations, contacts, the open one, and the input; shows what the client core reports."""

    CSS_PATH = "chat.tcss"
    BINDINGS = [
        Binding("ctrl+r", "retry", "Retry failed"),
        Binding("ctrl+o", "older", "Older"),
        Binding("ctrl+s", "save", "Save file"),
        Binding("f2", "focus_contacts", "Contacts"),
        Binding("escape", "focus_input", "Input", show=False),
        Binding("ctrl+q", "app.quit", "Quit"),
    ]

    def __init__(self, client: ChatCore) -> None:
        super().__init__()
        self.client = client
        self.peer: str | None = None
        self.opened: list[str] = []
        self._refresh_pending = False
        #: Who is typing where: peer -> user -> the timer that clears it.
        self.typing: dict[str, dict[str, Timer]] = {}
        self._fetching_avatars: set[str] = set()

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
                yield Static("No conversation open: /open USER, or pick one on the left.",
                             id="title")
                yield MessageLog(id="log")
                yield Static("", id="typing")
                yield TransferBar(id="transfer")
                yield Static("", id="notice")
                yield MessageInput(id="input")
            yield MemberList(id="members")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(MemberList).display = False
        # Names and statuses change without a notify: look again now and then.
        self.set_interval(PEOPLE_REFRESH, self.refresh_people)
        await self.refresh_conversations()
        await self.refresh_contacts()
        self.query_one(MessageInput).focus()

    # ------------------------------------------------------------ showing

    def say(self, text: str) -> None:
        """Show a line of help, error or progress above the input."""
        self.query_one("#notice", Static).update(Content(text))

    def notice(self) -> str:
        """The notice line's text."""
        return str(self.query_one("#notice", Static).render())

    async def refresh_conversations(self) -> None:
        """Redraw the conversation list from the client core (groups included)."""
        self._refresh_pending = False
        groups = ["#" + g["id"] for g in self.client.groups()]
        extra = [p for p in reversed(self.opened)] + groups
        await self.query_one(ConversationList).show(self.client.conversations(), extra, self.peer,
                                                    self.client.display_name)

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

    def refresh_members(self) -> None:
        """Redraw the members pane and title of the open conversation."""
        group = self.client.group(self.peer) if self.peer and self.peer.startswith("#") else None
        self.query_one(MemberList).show(group, self.client.display_name, self.client.is_online,
                                        self.me)
        self.query_one("#title", Static).update(Content(self.title_text()))

    def refresh_people(self) -> None:
        """Have the core fetch contacts, groups and profile again; events redraw.

        Returns nothing on purpose: a timer awaits what its callback returns, and a
        Deferred still in flight cannot be awaited by an asyncio task.
        """
        self.client.refresh_people()

    def title_text(self) -> str:
        """The line above the open conversation."""
        peer = self.peer
        if peer is None:
            return "No conversation open: /open USER, or pick one on the left."
        if peer.startswith("#"):
            group = self.client.group(peer)
            if group is None:
                return f"Group {peer} (not a member)"
            return f"Group {group['name']} ({len(group.get('members', []))} members)"
        name = self.client.display_name(peer)
        title = f"Conversation with {peer}" + (f" - {name}" if name != peer else "")
        online = self.client.is_online(peer)
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

    async def open(self, peer: str) -> None:
        """Open the conversation with ``peer``: its cached history, then what is pending."""
        self.peer = peer
        if peer not in self.opened and not peer.startswith("#"):
            self.opened.append(peer)
        group = self.client.group(peer) if peer.startswith("#") else None
        recipients = max(0, len(group.get("members", [])) - 1) if group else None
        log = self.query_one(MessageLog)
        await log.reset(self.me, self.client.display_name if peer.startswith("#") else None,
                        recipients)
        self.refresh_members()
        self.show_typing()
        try:
            history = await wait_for(self.client.history(peer, None, HISTORY_PAGE))
        except Exception as e:  # the cache and gateway failed: show what we can
            history = []
            self.say(f"Could not load history: {e}")
        await log.add_older(history)
        for out in self.client.pending(peer):
            await log.add_outgoing(out, self.me)
        self.client.mark_seen(peer)
        await self.refresh_conversations()
        log.scroll_end(animate=False)
        self.query_one(MessageInput).focus()

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

    async def on_message_input_submitted(self, event: MessageInput.Submitted) -> None:
        text = event.text.rstrip("\n")
        if text.startswith("/"):
            await self.command(text)
        elif self.peer is None:
            self.say("Open a conversation first: /open USER (or /help).")
        else:
            await self.send(self.peer, text)

    async def send(self, peer: str, text: str) -> None:
        """Send ``text`` to ``peer`` and show it if that conversation is open."""
        try:
            out = self.client.send(peer, text)
        except errors.DimError as e:
            self.say(f"Not sent: {e.message}")
            return
        if peer == self.peer:
            await self.query_one(MessageLog).add_outgoing(out, self.me)
        elif peer not in self.opened:
            self.opened.append(peer)
        self.refresh_conversations_soon()

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
            peer = self.group_peer(rest) if rest.startswith("#") else args[0]
            await self.open(peer)
            if not peer.startswith("#"):
                self.check_user(peer)
        elif name == "/msg" and len(args) == 2:
            await self.send(args[0], args[1])
            self.say(f"Sent to {args[0]}.")
        elif name in ("/add", "/accept") and len(args) == 1:
            await self.add_contact(args[0])
        elif name in ("/remove", "/decline") and len(args) == 1:
            await self.remove_contact(args[0])
        elif name == "/search" and rest:
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
            self.say(HELP)
        elif name == "/quit":
            await self.app.action_quit()
        elif name == "/retry":
            self.action_retry()
        elif name == "/older":
            await self.action_older()
        elif name == "/logout":
            self.app.logout()  # type: ignore[attr-defined]
        else:
            self.say(f"Unknown command {text!r}; /help lists them.")

    def group_peer(self, text: str) -> str:
        """``#id`` of the group named (by id or by name) in ``text``, which starts with #."""
        wanted = text[1:].strip()
        if self.client.group(wanted) is not None:
            return "#" + wanted
        for group in self.client.groups():
            if group.get("name") == wanted:
                return "#" + group["id"]
        return "#" + wanted

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
                self.say(f"Made group {created['name']} with {len(created.get('members', []))} members.")
                await self.refresh_conversations()
                await self.open("#" + created["id"])
            return
        if group is None:
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
        elif sub == "rename" and len(words) >= 2:
            name = rest.split(maxsplit=1)[1]
            await self.call(self.client.rename_group(group, name), f"Renamed to {name}.")
        else:
            self.say("Usage: /group new NAME USER... | add USER | remove USER | leave | rename NAME")
            return
        self.refresh_members()
        await self.refresh_conversations()

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
        if isinstance(out, S.OutgoingMessage):
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
        self.app.push_screen(ImageScreen(path, f"{file.get('name')} ({human_size(int(file.get('size') or 0))})"))

    # ------------------------------------------------------------ others

    def check_user(self, peer: str) -> None:
        """Warn, without blocking, if ``peer`` is not a user."""
        async def check() -> None:
            try:
                info = await wait_for(self.client.user_info(peer))
            except errors.NotFound:
                self.say(f"There is no user {peer!r}.")
                return
            except Exception:
                return
            if self.peer == peer and isinstance(info, dict):
                title = self.title_text()
                if self.client.is_online(peer) is None:
                    title += " (online)" if info.get("online") else " (offline)"
                self.query_one("#title", Static).update(Content(title))
        self.run_worker(check(), exclusive=False)

    def action_focus_contacts(self) -> None:
        """Move to the contacts pane (a accepts, d declines, Enter opens)."""
        self.query_one(ContactList).focus()

    def action_focus_input(self) -> None:
        """Back to the message input."""
        self.query_one(MessageInput).focus()

    def action_retry(self) -> None:
        """Send the open conversation's failed messages again."""
        failed = self.query_one(MessageLog).failed_ids()
        if not failed:
            self.say("Nothing to retry.")
            return
        for id in failed:
            self.client.retry(id)
        self.say(f"Retrying {len(failed)} message(s).")

    async def action_older(self) -> None:
        """Load older messages of the open conversation above what is shown."""
        if self.peer is None:
            return
        log = self.query_one(MessageLog)
        before = log.oldest_seq
        if before is None or before <= 1:
            self.say("No older messages.")
            return
        older = await wait_for(self.client.history(self.peer, before, HISTORY_PAGE))
        if not older:
            self.say("No older messages.")
            return
        await log.add_older(older)
        self.say(f"Loaded {len(older)} older message(s).")

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

    async def handle_event(self, event: Any) -> None:
        """Show one client-core event."""
        logs = self.query(MessageLog)
        if not logs:  # the screen is being taken down (the app is closing): nothing to show
            return
        log = logs.first()
        if isinstance(event, S.MessageReceived):
            peer = event.entry.peer(self.me)
            self.stopped_typing(event.entry.sender, peer)
            if peer == self.peer:
                await log.add_message(event.entry)
                self.client.mark_seen(peer)
            elif event.entry.sender != self.me:
                self.app.ring()  # type: ignore[attr-defined]
            self.refresh_conversations_soon()
        elif isinstance(event, S.MessageStatus):
            if event.message.peer() == self.peer:
                await log.add_outgoing(event.message, self.me)
            if event.state == S.FAILED and event.message.error:
                self.say(f"Not sent: {event.message.error}. ctrl+r retries.")
            if event.state == S.SENT:
                self.refresh_conversations_soon()
        elif isinstance(event, S.Delivered):
            log.mark_delivered(event.mid, event.by)
        elif isinstance(event, S.ReadReceipt):
            log.mark_read(event.mid, event.by)
        elif isinstance(event, S.ReadUpTo):
            self.refresh_conversations_soon()
        elif isinstance(event, S.PeerTyping):
            self.peer_typing(event.user, event.peer)
        elif isinstance(event, (S.PresenceChanged, S.RosterChanged)):
            await self.refresh_contacts()
            self.refresh_conversations_soon()
        elif isinstance(event, S.Notified):
            self.notified(event)
        elif isinstance(event, S.SyncFinished):
            self.refresh_conversations_soon()
        elif isinstance(event, S.ServerError) and not event.ref:
            self.say(f"Server: {event.code}: {event.message}")

    def notified(self, event: S.Notified) -> None:
        """Tell the person about a contact request or a new contact."""
        if event.event == "contact_request":
            who = event.fields.get("from", "someone")
            self.say(f"{who} asks to be your contact: /accept {who} (or a in the contacts pane).")
        elif event.event == "contact_added":
            self.say(f"{event.fields.get('user', 'someone')} is now a contact.")
