"""All store writes of one reactor turn in one call: :class:`StoreBatcher`.

Every ``send``, ``ack`` and ``read`` that the node's connections hand it during one turn of
the reactor is added here with what to do with its outcome; on the next turn the whole batch
goes to :meth:`dim.store.interface.IStore.apply` as one call with one Deferred.  Order is the
batch's order, so a sender's messages keep theirs without each waiting for the one before,
and only one Deferred per batch is made, not several per message.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from dim.errors import Internal
from dim.store.interface import StoreOp

_log = Logger()

#: What to call with an operation's outcome, and what to call with its failure.
Handlers = tuple[Callable[[Any], object], Callable[[Failure], object]]


class StoreBatcher:
    """Gathers store operations for one :meth:`IStore.apply` call per reactor turn.

    ``apply`` runs a batch: the node passes one that calls its current store's.

    ``batches`` and ``operations`` count what was handed to the store (for tests and
    metrics).
    """

    def __init__(self, apply: Callable[[list[StoreOp]], Any], clock: IReactorTime) -> None:
        #: The store's :meth:`IStore.apply` (or anything that stands in for it).
        self.apply = apply
        self.clock = clock
        self._ops: list[StoreOp] = []
        self._handlers: list[Handlers] = []
        self._call: IDelayedCall | None = None
        self.batches = 0
        self.operations = 0

    def add(self, op: StoreOp, on_result: Callable[[Any], object],
            on_failure: Callable[[Failure], object]) -> None:
        """Queue ``op`` for this turn's batch; ``on_result`` gets its outcome, or
        ``on_failure`` its failure (the whole batch failing fails every operation with
        ``internal``)."""
        self._ops.append(op)
        self._handlers.append((on_result, on_failure))
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    @property
    def pending(self) -> int:
        """Operations waiting for the next batch."""
        return len(self._ops)

    def flush(self) -> None:
        """Hand everything gathered so far to the store now, as one batch."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        ops, self._ops = self._ops, []
        if not ops:
            return
        handlers, self._handlers = self._handlers, []
        self.batches += 1
        self.operations += len(ops)
        d = maybeDeferred(self.apply, ops)
        d.addCallbacks(self._done, self._failed, callbackArgs=(handlers,),
                       errbackArgs=(handlers,))

    @staticmethod
    def _done(outcomes: list[Any], handlers: list[Handlers]) -> None:
        for (on_result, on_failure), outcome in zip(handlers, outcomes, strict=True):
            try:
                if isinstance(outcome, Failure):
                    on_failure(outcome)
                else:
                    on_result(outcome)
            except Exception:
                _log.failure("handling the outcome of a store operation failed")

    @staticmethod
    def _failed(failure: Failure, handlers: list[Handlers]) -> None:
        _log.failure("a batch of {n} store operations failed", failure, n=len(handlers))
        for _, on_failure in handlers:
            try:
                # One error each: the connection fills in each one's own ref.
                on_failure(Failure(Internal("the store failed to write; the request may be "
                                            "retried")))
            except Exception:
                _log.failure("handling the failure of a store operation failed")
