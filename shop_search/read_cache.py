"""
Per-process caches of what every search reads and what seldom changes: the
serving models, the shop's categories with their vectors, a queryset's row
estimate. Each saves a database round trip (or an encoder run) per request.

A value is kept for a few seconds at most, so that a change made by another
process (a promotion by ``shop_search_reindex``, a category renamed in the
admin of another worker) shows within that time everywhere; a change saved
in this process clears the cache at once and again when it commits. Inside
a transaction the caches read through: it must see its own changes, and
what it reads may be rolled back (so with ``ATOMIC_REQUESTS`` every request
reads through them; see docs/deployment.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.db import connections, transaction
from django.db.models.signals import post_delete, post_migrate, post_save

from .models import IndexState, Serving
from .models import serving as read_serving

__all__ = ["ReadCache", "serving", "clear_all", "SERVING_SECONDS"]

T = TypeVar("T")

#: How long a process may go on with the serving models it read: a promotion
#: in another process reaches this one within that time (this process's own
#: promotions at once).
SERVING_SECONDS = 5.0

_all: list[ReadCache] = []


class ReadCache:
    """
    A small thread-safe cache of database reads, each kept ``seconds`` at
    most, ``size`` at most (the oldest go first). Inside a transaction it
    reads through: nothing is served from it or kept in it there.
    """

    def __init__(self, seconds: float, size: int = 256) -> None:
        self.seconds = seconds
        self.size = size
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._watched: set[type] = set()
        _all.append(self)

    def get(self, key: Hashable, read: Callable[[], T], using: str = "default") -> T:
        """The value for ``key``, calling ``read()`` when it is missing or
        old, and always inside a transaction on ``using`` (which must see its
        own changes, and may roll back what it read)."""
        if connections[using].in_atomic_block:
            return read()
        now = time.monotonic()
        found = self._values.get(key)
        if found is not None and now - found[0] < self.seconds:
            return found[1]
        value = read()
        with self._lock:
            if len(self._values) >= self.size:
                for old in sorted(self._values, key=lambda k: self._values[k][0])[
                    : max(1, self.size // 4)
                ]:
                    del self._values[old]
            self._values[key] = (now, value)
        return value

    def clear(self, **_signal: Any) -> None:
        with self._lock:
            self._values.clear()

    def clear_on_change(self, sender: type) -> None:
        """Clear this cache when a ``sender`` row is saved or deleted in this
        process: at once, and again when the transaction commits (a read in
        between, by another thread, saw the old row). Cheap to call again."""
        if sender in self._watched:
            return
        self._watched.add(sender)

        def changed(using: str = "default", **_kwargs: Any) -> None:
            self.clear()
            transaction.on_commit(self.clear, using=using)

        uid = f"shop_search.read_cache.{id(self)}.{sender._meta.label}"
        for signal in (post_save, post_delete):
            signal.connect(changed, sender=sender, weak=False, dispatch_uid=uid)


_serving = ReadCache(SERVING_SECONDS, size=16)
_serving.clear_on_change(IndexState)


def serving(using: str = "default") -> Serving:
    """:func:`shop_search.models.serving`, read at most every
    :data:`SERVING_SECONDS` per process (at once after a promotion made in
    this process). For the request path; status displays and the write path
    read the state itself."""
    return _serving.get(using, lambda: read_serving(using), using)


def clear_all(**_signal: Any) -> None:
    """Forget every cached read (settings changed, tables migrated or
    flushed)."""
    for cache in _all:
        cache.clear()


setting_changed.connect(clear_all, dispatch_uid="shop_search.read_cache.settings")
# migrate and flush (which test runs use between tests) change rows without
# model signals.
post_migrate.connect(clear_all, dispatch_uid="shop_search.read_cache.migrate")
