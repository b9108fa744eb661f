"""The DIM client core: gateway calls, the live session, the local cache and settings.

Nothing here imports Textual; the terminal chat, tests and the load generator all drive the
same :class:`~dim.client.session.ClientSession`.
"""
