"""Read-ahead: iterate in a thread of its own, one item ahead of the consumer.

The runner reads and prepares the next batch while the previous one loads. The producer runs in
a copy of the caller's context (so events know their run), errors surface in the consumer's
thread, and a consumer that stops early stops the producer and closes the iterator.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar, cast

__all__ = ["read_ahead"]

_T = TypeVar("_T")
_DONE = object()


def read_ahead(items: Iterator[_T]) -> Iterator[_T]:
    """Iterate ``items`` in a thread one item ahead; errors surface in the caller's thread."""
    slot: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(slot, item, stop):
                    return
            _offer(slot, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
            _offer(slot, exc, stop)
        finally:
            close = getattr(items, "close", None)
            if callable(close):
                close()

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(produce,), name="mendflow-read", daemon=True
    )
    thread.start()
    try:
        while (item := slot.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield cast(_T, item)
    finally:
        stop.set()
        thread.join(timeout=30)


def _offer(slot: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer stopped; True when it was handed over."""
    while not stop.is_set():
        try:
            slot.put(item, timeout=0.1)
        except queue.Full:
            continue
        return True
    return False
