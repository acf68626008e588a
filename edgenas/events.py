"""Events: library code reports what it does through an event sink; only the CLI prints.

A sink is any callable ``sink(event: str, **fields)``. Progress over long work is three events:
``progress.start`` (id, desc, total), ``progress.update`` (id, n, and optional postfix dict),
``progress.end`` (id).
"""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

log = logging.getLogger("edgenas")


class EventSink(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


def null_sink(event: str, **fields: Any) -> None:
    log.debug("%s %s", event, fields)


_ids = itertools.count(1)


@contextmanager
def progress(sink: EventSink | None, desc: str, total: int | None) -> Iterator[Callable[..., None]]:
    """``with progress(sink, "training", 100) as tick: tick(1, loss=0.3)``."""
    sink = sink or null_sink
    pid = next(_ids)
    sink("progress.start", id=pid, desc=desc, total=total)

    def tick(n: int = 1, **postfix: Any) -> None:
        sink("progress.update", id=pid, n=n, postfix=postfix)

    try:
        yield tick
    finally:
        sink("progress.end", id=pid)
