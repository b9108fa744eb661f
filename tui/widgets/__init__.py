"""Widgets of the terminal chat: connection bar, conversation list, message log and input."""
