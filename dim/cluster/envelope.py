"""What nodes (and the cluster gateway) send each other: frames for the sessions of users.

An :class:`Envelope` carries the deliveries one node makes to another in one reactor turn;
each :class:`Part` says: write these frames to every session of each user on the receiving
node, except the session ``skip``.  Frames travel already encoded (each one's JSON as
:class:`msgspec.Raw`), beside their type and, for a ``msg``, its seq: the sending side
encodes every frame once, and the receiving side writes those bytes to its sessions with a
length prefix, without decoding or encoding them again.

:func:`by_node` is the one place where deliveries are grouped by the node that holds the
recipients' sessions; the node's fan-out and the gateway's pusher both use it.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import msgspec

from dim.cluster.interface import SessionRef
from dim.protocol import codec
from dim.protocol import frames as F

_LENGTH = struct.Struct(">I")


class Item(msgspec.Struct, array_like=True, frozen=True):
    """One encoded frame: its ``type``, its inbox ``seq`` (for a ``msg``, else None) and its
    JSON."""

    type: str
    seq: int | None
    frame: msgspec.Raw

    @classmethod
    def of(cls, data: bytes, frame_type: str, seq: int | None) -> Item:
        """The item of a frame encoded with its 4-byte length prefix (as written to clients)."""
        return cls(frame_type, seq, msgspec.Raw(memoryview(data)[4:]))

    def framed(self) -> bytes:
        """The frame with its length prefix, as written to a client."""
        raw = self.frame
        return _LENGTH.pack(len(raw)) + bytes(raw)


def item(frame: F._Frame) -> Item:
    """The item of a typed frame (encoded here)."""
    seq = frame.seq if type(frame) is F.Msg else None
    return Item.of(codec.encode(frame), F.frame_type(frame), seq)


class Part(msgspec.Struct, kw_only=True):
    """One delivery inside an envelope: ``to`` maps each user to its frames, in order;
    ``skip`` is a session id that gets none of them (the sending session)."""

    to: dict[str, list[Item]]
    skip: str | None = None


class Envelope(msgspec.Struct, kw_only=True):
    """Everything one node (or the gateway) delivers to the sessions of another node in one
    reactor turn: its deliveries, in the order they were made."""

    parts: list[Part]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Envelope).decode

#: A delivery: each user's items, and the session that gets none of them.
Delivery = tuple[Mapping[str, list[Item]], "str | None"]


def encode(envelope: Envelope) -> bytes:
    """The bytes of an envelope, for :meth:`dim.cluster.interface.IForwarder.forward`."""
    return _encode(envelope)


def decode(payload: bytes) -> Envelope:
    """An envelope from its bytes; :class:`msgspec.ValidationError` or
    :class:`msgspec.DecodeError` for anything else."""
    return _decode(payload)


def by_node(located: Mapping[str, Iterable[SessionRef]], deliveries: Iterable[Delivery],
            here: str | None = None) -> dict[str, Envelope]:
    """One envelope per node holding sessions of the deliveries' users, its parts in the
    order of the deliveries (consecutive deliveries with the same ``skip`` share a part, each
    user's items in order): each user's items go to every node holding one of its sessions,
    except the node ``here`` (served directly) and a node whose only session of that user is
    the delivery's ``skip``."""
    out: dict[str, Envelope] = {}
    for targets, skip in deliveries:
        parts: dict[str, Part] = {}
        for user, items in targets.items():
            refs = located.get(user)
            if not refs or not items:
                continue
            nodes = {ref.node for ref in refs if ref.node != here and ref.session != skip}
            for node in nodes:
                part = parts.get(node)
                if part is None:
                    envelope = out.get(node)
                    if envelope is None:
                        envelope = out[node] = Envelope(parts=[])
                    last = envelope.parts[-1] if envelope.parts else None
                    if last is not None and last.skip == skip:
                        part = last  # the same sending session: one part holds both
                    else:
                        part = Part(to={}, skip=skip)
                        envelope.parts.append(part)
                    parts[node] = part
                had = part.to.get(user)
                part.to[user] = items if had is None else had + items
    return out
