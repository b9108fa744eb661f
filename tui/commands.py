"""The chat's slash commands and keys, in one table: /help, /help CMD, Tab completion and the
command palette all read it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One slash command: its name, its arguments in words, and what it does."""

    name: str
    args: str
    does: str
    #: What the argument names: "user", "conversation", "group", "path" or "" (nothing to
    #: complete).
    completes: str = ""

    @property
    def usage(self) -> str:
        """``/name ARGS``."""
        return f"{self.name} {self.args}".rstrip()


COMMANDS: list[Command] = [
    Command("/open", "USER | #GROUP", "open a conversation with USER, or a group",
            "conversation"),
    Command("/msg", "USER TEXT", "send TEXT to USER without opening it", "user"),
    Command("/add", "USER", "ask USER to be a contact, or accept them", "user"),
    Command("/accept", "USER", "accept a contact request (a in contacts)", "user"),
    Command("/decline", "USER", "decline a contact request (d in contacts)", "user"),
    Command("/remove", "USER", "remove a contact, or withdraw a request", "user"),
    Command("/search", "TEXT", "find your messages containing TEXT; Enter jumps to one"),
    Command("/who", "TEXT", "find people by user or display name"),
    Command("/profile", "", "edit your display name and status"),
    Command("/avatar", "PATH", "set your picture", "path"),
    Command("/group", "new NAME USER... | add USER | remove USER | leave | rename NAME",
            "make a group, or change the open one", "user"),
    Command("/send", "PATH", "upload a file or image and send it here", "path"),
    Command("/save", "[NAME]", "save the newest (or named) file here (ctrl+s)"),
    Command("/view", "[NAME]", "show the newest (or named) image here"),
    Command("/retry", "", "send failed messages here again (ctrl+r)"),
    Command("/older", "", "load older messages (ctrl+o, or PgUp at the top)"),
    Command("/reconnect", "", "connect again now, without waiting (F5)"),
    Command("/redraw", "", "redraw the screen (ctrl+l)"),
    Command("/logout", "", "log out and forget the saved login"),
    Command("/help", "[COMMAND]", "this help, or one command's"),
    Command("/quit", "", "leave (ctrl+q)"),
]

KEYS: list[tuple[str, str]] = [
    ("Enter", "send (ctrl+j or shift+enter: a new line)"),
    ("//text", "send a message that starts with /"),
    ("Tab", "complete a command, user, #group or @member; again: the next"),
    ("ctrl+up/ctrl+down", "bring back what you typed before (input history)"),
    ("Up (input empty)", "edit your last message (Enter saves, Escape cancels)"),
    ("alt+up/alt+down", "select a message (then up/down move, Escape back):"),
    ("  r / e", "reply to it (quoted above yours) / edit it (yours)"),
    ("  d / +", "recall it (yours; asks first) / react (again: take back)"),
    ("@name", "mention a group member (highlighted; Tab completes)"),
    ("PgUp/PgDn", "scroll the conversation a page (PgUp at the top: older)"),
    ("shift+up/shift+down", "scroll the conversation a line"),
    ("Home/End", "top/bottom of the conversation (input empty)"),
    ("ctrl+home/ctrl+end", "top/bottom of the conversation, always"),
    ("alt+1 .. alt+9", "open conversation 1..9 of the list"),
    ("ctrl+n/ctrl+p", "next/previous conversation (alt+right/left)"),
    ("alt+a", "next conversation with unread messages"),
    ("ctrl+k", "command palette: commands, conversations"),
    ("F1", "this help"),
    ("F2", "contacts pane (a accept, d decline); Escape back"),
    ("F3 / F4", "hide or show the side pane / members pane"),
    ("F5", "reconnect now (while the bar counts down)"),
    ("ctrl+l", "redraw the screen"),
    ("ctrl+q", "quit"),
]

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


def help_text() -> str:
    """The whole help: every command, then the keys."""
    width = max(len(c.usage) for c in COMMANDS if len(c.usage) <= 24)
    lines = ["Commands (/help COMMAND for one):"]
    for c in COMMANDS:
        usage = c.usage
        if len(usage) > width:
            lines.append(f"  {usage}")
            lines.append(f"  {'':{width}}  {c.does}")
        else:
            lines.append(f"  {usage:{width}}  {c.does}")
    lines.append("")
    lines.append("Keys:")
    key_width = max(len(k) for k, _ in KEYS)
    lines.extend(f"  {k:{key_width}}  {v}" for k, v in KEYS)
    return "\n".join(lines)


def command_help(name: str) -> str | None:
    """One command's help (``name`` with or without the slash), or None if unknown."""
    command = BY_NAME.get("/" + name.lstrip("/").lower())
    if command is None:
        return None
    return f"{command.usage}: {command.does}"


def command_names(prefix: str = "") -> list[str]:
    """The commands starting with ``prefix``, in table order."""
    return [c.name for c in COMMANDS if c.name.startswith(prefix.lower())]
