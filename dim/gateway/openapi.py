"""The OpenAPI 3 description of the gateway's HTTP API, served at ``GET /v1/openapi.json``.

A test checks it against the Klein routes of :class:`dim.gateway.app.Gateway` (every route
described, nothing described that does not exist) and schemathesis runs it against a real
embedded ``dim``.  docs/protocol.md is the prose for the same calls.
"""
from __future__ import annotations

from typing import Any

USER = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,32}$", "maxLength": 32}
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 256}
NODE = {"type": "object", "required": ["id", "host", "port"],
        "properties": {"id": {"type": "string"}, "host": {"type": "string"},
                       "port": {"type": "integer"}}}
PROFILE = {"type": "object", "required": ["user", "name", "status", "avatar"],
           "properties": {"user": USER, "name": {"type": "string"},
                          "status": {"type": "string"},
                          "avatar": {"type": ["string", "null"]}}}
GROUP = {"type": "object", "required": ["id", "name", "owner", "members"],
         "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                        "owner": USER, "members": {"type": "array", "items": USER}}}
FILE = {"type": "object", "required": ["id", "name", "size", "mime", "sha256"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                       "size": {"type": "integer"}, "mime": {"type": "string"},
                       "sha256": {"type": "string"}}}
ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "object", "required": ["code", "message"],
                                  "properties": {"code": {"type": "string"},
                                                 "message": {"type": "string"}}}}}

_STATUS_TEXT = {200: "OK", 201: "Created", 206: "Partial content", 400: "Invalid request",
                401: "No valid token", 403: "Not allowed", 404: "Not found",
                405: "No such method", 408: "The request took too long to arrive",
                409: "Taken", 413: "Body too large", 416: "Range not satisfiable",
                429: "Too many requests; see Retry-After", 503: "Unavailable"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: int, answer: dict[str, Any] | None, errors: list[int],
        auth: bool = True, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One operation: its summary, success answer, error statuses, body and parameters."""
    responses: dict[str, Any] = {
        str(ok): {"description": _STATUS_TEXT[ok], **(_json(answer) if answer else {})}}
    for status in sorted({*errors, 400, 413, 408} if body else set(errors)):
        responses[str(status)] = {"description": _STATUS_TEXT[status], **_json(ERROR)}
    if auth:
        responses.setdefault("401", {"description": _STATUS_TEXT[401], **_json(ERROR)})
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if not auth:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    return op


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_EMPTY = {"type": "object"}
_USERS = {"type": "array", "items": USER}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "DIM gateway", "version": "1",
             "description": "Accounts, tokens, node routing, messages, people, groups and "
                            "files of DIM. Errors are {\"error\": {\"code\", \"message\"}}."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/register": {"post": _op(
            "Create an account", 201, _obj(["user"], user=USER), [409, 429], auth=False,
            body=_obj(["user", "password"], user=USER, password=PASSWORD))},
        "/v1/login": {"post": _op(
            "Check a password and issue a token", 200,
            _obj(["token", "user", "expires", "node"], token={"type": "string"}, user=USER,
                 expires={"type": "integer"}, node={"oneOf": [NODE, {"type": "null"}]}),
            [401, 429], auth=False,
            body=_obj(["user", "password"], user={"type": "string"},
                      password={"type": "string"}))},
        "/v1/password": {"put": _op(
            "Change the password and revoke every other token", 200, _EMPTY, [403, 429],
            body=_obj(["old", "new"], old={"type": "string"}, new=PASSWORD))},
        "/v1/logout": {"post": _op("Revoke the caller's token", 200, _EMPTY, [])},
        "/v1/route": {"post": _op(
            "A node to connect to", 200, _obj(["node"], node=NODE), [400, 503],
            params=None)},
        "/v1/messages": {"get": _op(
            "The caller's inbox after a seq", 200,
            _obj(["messages", "last_seq", "more"], messages={"type": "array"},
                 last_seq={"type": "integer"}, more={"type": "boolean"}), [400],
            params=[_query("after", {"type": "integer", "minimum": 0}),
                    _query("limit", {"type": "integer", "minimum": 1}),
                    _query("before", {"type": "integer", "minimum": 1}),
                    _query("with", USER),
                    _query("group", {"type": "string", "minLength": 1, "maxLength": 64})])},
        "/v1/messages/search": {"get": _op(
            "The caller's messages whose current body contains q, newest first", 200,
            _obj(["messages"], messages={"type": "array"}), [400],
            params=[_query("q", {"type": "string", "minLength": 1, "maxLength": 200}, True),
                    _query("with", USER),
                    _query("group", {"type": "string", "minLength": 1, "maxLength": 64}),
                    _query("limit", {"type": "integer", "minimum": 1})])},
        "/v1/conversations": {"get": _op(
            "The caller's conversations with read pointers and unread counts, newest first",
            200, _obj(["conversations"], conversations={"type": "array"}), [400],
            params=[_query("limit", {"type": "integer", "minimum": 1})])},
        "/v1/users": {"get": _op(
            "Search users by user or display name", 200,
            _obj(["users"], users={"type": "array"}), [400],
            params=[_query("q", {"type": "string", "minLength": 1, "maxLength": 64}, True),
                    _query("limit", {"type": "integer", "minimum": 1})])},
        "/v1/users/{name}": {"get": _op(
            "One user's profile and presence", 200, PROFILE, [404],
            params=[_path("name")])},
        "/v1/profile": {
            "get": _op("The caller's profile", 200, PROFILE, []),
            "put": _op("Change the caller's profile", 200, PROFILE, [400],
                       body=_obj([], name={"type": "string"}, status={"type": "string"},
                                 avatar={"type": ["string", "null"]}))},
        "/v1/contacts": {
            "get": _op("The caller's contacts and requests", 200,
                       _obj(["contacts"], contacts={"type": "array"}), []),
            "post": _op("Ask for or accept a contact", 200, _obj(["contact"]), [400, 404],
                        body=_obj(["user"], user={"type": "string"}))},
        "/v1/contacts/{name}": {"delete": _op(
            "Remove a contact or a request", 200, _EMPTY, [404], params=[_path("name")])},
        "/v1/groups": {
            "post": _op("Create a group", 201, _obj(["group"], group=GROUP), [400, 404],
                        body=_obj(["name", "members"], name={"type": "string"},
                                  members=_USERS)),
            "get": _op("The caller's groups", 200,
                       _obj(["groups"], groups={"type": "array", "items": GROUP}), [])},
        "/v1/groups/{group_id}": {
            "get": _op("One group", 200, _obj(["group"], group=GROUP), [403, 404],
                       params=[_path("group_id")]),
            "put": _op("Rename a group (its owner)", 200, _obj(["group"], group=GROUP),
                       [400, 403, 404], params=[_path("group_id")],
                       body=_obj(["name"], name={"type": "string"}))},
        "/v1/groups/{group_id}/members": {"post": _op(
            "Add members (the owner)", 200, _obj(["group"], group=GROUP), [400, 403, 404],
            params=[_path("group_id")], body=_obj(["users"], users=_USERS))},
        "/v1/groups/{group_id}/members/{name}": {"delete": _op(
            "Remove a member, or leave", 200, _EMPTY, [403, 404],
            params=[_path("group_id"), _path("name")])},
        "/v1/files": {"post": {
            **_op("Upload a file", 201, _obj(["file"], file=FILE), [400, 413, 503],
                  params=[_query("name", {"type": "string", "minLength": 1,
                                          "maxLength": 255}, True)]),
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}}},
        "/v1/files/{file_id}": {"get": _op(
            "Download a file (one Range honoured)", 200,
            None, [206, 403, 404, 416], params=[_path("file_id")])},
        "/v1/nodes": {"get": _op(
            "The live nodes", 200, _obj(["nodes"], nodes={"type": "array"}), [],
            auth=False)},
        "/v1/health": {"get": _op(
            "Liveness", 200, _obj(["status"], status={"type": "string"}), [], auth=False)},
        "/v1/openapi.json": {"get": _op(
            "This description", 200, {"type": "object"}, [], auth=False)},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                             "responses": {"200": {"description": "OK", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}}}},
    },
}
