"""The members pane of an open group: who is in it, who owns it, who is online."""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from textual.content import Content
from textual.widgets import Static

from tui.widgets.contact_list import OFFLINE_DOT, ONLINE_DOT


def member_lines(group: dict[str, Any], name: Callable[[str], str],
                 online: Callable[[str], bool | None], me: str) -> list[str]:
    """One line per member: presence dot (· when unknown), display name, owner and self marks."""
    lines = []
    for user in group.get("members", []):
        state = True if user == me else online(user)
        dot = ONLINE_DOT if state else OFFLINE_DOT if state is False else "·"
        marks = [m for m, on in (("owner", user == group.get("owner")), ("you", user == me)) if on]
        label = name(user)
        if label != user:
            label = f"{label} ({user})"
        lines.append(f"{dot} {label}" + (f" [{', '.join(marks)}]" if marks else ""))
    return lines


class MemberList(Static):
    """The members of the open group, one per line, under a heading."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.plain_lines: list[str] = []
        self.legend = ""

    def show(self, group: dict[str, Any] | None, name: Callable[[str], str],
             online: Callable[[str], bool | None], me: str, legend: str = "") -> None:
        """Show ``group``'s members, with ``legend`` under them explaining the dots (or
        nothing, and hide, for a person-to-person chat)."""
        self.display = group is not None
        if group is None:
            self.plain_lines = []
            self.legend = ""
            self.update("")
            return
        self.plain_lines = member_lines(group, name, online, me)
        self.legend = legend
        heading = f"Members ({len(self.plain_lines)})"
        content = Content("\n".join([heading, *self.plain_lines]))
        if legend:
            content = content + Content.styled("\n\n" + legend, "dim")
        self.update(content)
