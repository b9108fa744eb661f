"""Screens of the terminal chat: login and the chat itself."""
