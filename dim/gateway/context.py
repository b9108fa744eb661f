"""What the gateway's route modules (people, groups, files) use of the gateway.

The routes are plain functions that take the gateway as their first argument; they type it as
:class:`RouteContext` rather than importing :class:`dim.gateway.app.Gateway`, so the route
modules and the app that mounts them do not import each other.
"""
from __future__ import annotations

from typing import Any, Protocol

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from dim.cluster.interface import ISessionRegistry
from dim.files import FileStorage
from dim.gateway.limits import GatewayLimits
from dim.protocol import frames as F
from dim.store.interface import IStore


class RouteContext(Protocol):
    """The gateway as its route modules see it."""

    store: IStore
    sessions: ISessionRegistry
    files: FileStorage | None
    limits: GatewayLimits
    max_file_size: int
    max_group_members: int
    log: Logger

    def now_ms(self) -> int:
        """The time now, in milliseconds since the epoch."""

    def notify(self, targets: dict[str, list[F._Frame]]) -> None:
        """Push frames to users who are online, wherever they are connected."""

    def json_body(self, request: IRequest, required: bool = True) -> dict[str, Any]:
        """The request's JSON object; BadRequest if it is not one."""

    async def authenticated_user(self, request: IRequest) -> str:
        """The user the request's bearer token names; Unauthorized otherwise."""

    def respond(self, request: IRequest, body: Any, status: int = 200) -> bytes:
        """Encode ``body`` as the JSON answer with ``status``."""
