"""What nodes (and the cluster gateway) send each other: frames for the sessions of users.

An :class:`Envelope` says: write these frames to every session of each user on the receiving
node, except the session ``skip``.  Frames travel already encoded (each one's JSON as
:class:`msgspec.Raw`), beside their type and, for a ``msg``, its seq: the sending side
encodes every frame once, and the receiving side writes those bytes to its sessions with a
length prefix, without decoding or encoding them again.

:func:`by_node` is the one place where deliveries are grouped by the node that holds the
recipients' sessions; the node and the gateway's pusher both use it.
"""
from __future__ import annotations

import struct
from typing import Iterable, Mapping

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


class Envelope(msgspec.Struct, kw_only=True):
    """Frames for the sessions of some users on one node: ``to`` maps each user to its
    frames, in order; ``skip`` is a session id that gets none (the sending session)."""

    to: dict[str, list[Item]]
    skip: str | None = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Envelope).decode


def encode(envelope: Envelope) -> bytes:
    """The bytes of an envelope, for :meth:`dim.cluster.interface.IForwarder.forward`."""
    return _encode(envelope)


def decode(payload: bytes) -> Envelope:
    """An envelope from its bytes; :class:`msgspec.ValidationError` or
    :class:`msgspec.DecodeError` for anything else."""
    return _decode(payload)


def by_node(located: Mapping[str, Iterable[SessionRef]], targets: Mapping[str, list[Item]],
            skip: str | None = None, here: str | None = None) -> dict[str, Envelope]:
    """One envelope per node holding sessions of the target users: each user's items go to
    every node holding one of its sessions, except the node ``here`` (served directly) and a
    node whose only session of that user is ``skip``."""
    out: dict[str, Envelope] = {}
    for user, items in targets.items():
        refs = located.get(user)
        if not refs or not items:
            continue
        for ref in refs:
            node = ref.node
            if node == here or ref.session == skip:
                continue
            envelope = out.get(node)
            if envelope is None:
                envelope = out[node] = Envelope(to={}, skip=skip)
            envelope.to[user] = items
    return out
