"""Storage of users, tokens and inboxes: an interface, SQLite, Redis and in-memory twins."""
