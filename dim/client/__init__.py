"""The DIM client core: gateway calls, the live session, the local cache and settings.

Nothing here imports Textual; the terminal chat, tests, bots and the load generator all drive
the same :class:`~dim.client.session.ClientSession`.  :mod:`dim.client.events` holds what a
session tells its listeners, :mod:`dim.client.session` the session itself, and
:mod:`dim.client.chat` the :class:`~dim.client.chat.ChatClient` the terminal chat is given
(login, the session, the cache and saved settings together).  :mod:`dim.client.examples`
holds small programs written against it (docs/client.md).
"""
