"""
Keep vectors and words current when products or their gallery images change.

``post_save`` and ``post_delete`` of each searchable model, and of each
gallery model a declaration names, queue indexing of the product (and of
the variants that show its images) with ``transaction.on_commit``; a
rolled-back save queues nothing. Fixture loads (``raw``) are skipped.
Indexing itself decides what changed (:mod:`shop_search.indexing`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

from .conf import shop_search_settings
from .registry import declaration, searchable_models

__all__ = [
    "connect_signals",
    "disconnect_signals",
    "indexing_paused",
    "schedule_indexing",
]

logger = logging.getLogger(__name__)
_state = threading.local()
_connected: list[tuple[Any, Any, str]] = []


@contextmanager
def indexing_paused() -> Iterator[None]:
    """
    Within this block (in this thread), saves queue no indexing.

    For bulk imports: the products are left "missing", and one
    ``shop_search_reindex`` run afterwards encodes them in batches.
    """
    previous = getattr(_state, "paused", False)
    _state.paused = True
    try:
        yield
    finally:
        _state.paused = previous


def _with_variants(
    model: type[models.Model], pks: list[Any], using: str | None
) -> list[Any]:
    """``pks`` and the variants whose images come from them."""
    parent = declaration(model).parent
    if not parent or not pks:
        return pks
    children = model._base_manager.using(using or "default").filter(
        **{f"{parent}__in": pks}
    )
    return [*pks, *children.values_list("pk", flat=True)]


def index_on_save(
    sender: type[models.Model],
    instance: Any,
    raw: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    if raw or getattr(_state, "paused", False):
        return
    # Any save may change the product's words or images; indexing skips
    # what is current with a few queries.
    schedule_indexing(sender, _with_variants(sender, [instance.pk], using), using=using)


def forget_on_delete(sender: type[models.Model], instance: Any, **kwargs: Any) -> None:
    from django.contrib.contenttypes.models import ContentType

    using = kwargs.get("using") or "default"
    content_type = ContentType.objects.db_manager(using).get_for_model(
        sender, for_concrete_model=False
    )
    keys = [str(instance.pk)]
    _forget(content_type, keys, using)
    # Once the delete commits, again under the products' locks: an indexing
    # batch that read a product before the delete may be writing its vectors
    # now (it holds the lock until it commits). Not in the shop's
    # transaction, whose own locks it could deadlock with.
    batch = _pending(using, "_shop_search_forget", _Forget)
    batch.keys.setdefault(content_type, {}).update(dict.fromkeys(keys))
    transaction.on_commit(batch, using=using, robust=True)


def _forget(
    content_type: Any, keys: list[str], using: str, *, locked: bool = False
) -> None:
    """Remove deleted products' words, vectors and index entries (after the
    commit, ``locked``: only of products that are gone, since a delete
    rolled back leaves its key in the batch)."""
    from .index_batches import lock_products
    from .models import ImageVector, IndexEntry, SearchDocument

    with transaction.atomic(using=using):
        if locked:
            lock_products(content_type, keys, using)
            model = content_type.model_class()
            if model is not None:
                alive = model._base_manager.using(using).filter(
                    pk__in=[model._meta.pk.to_python(key) for key in keys]
                )
                kept = {str(pk) for pk in alive.values_list("pk", flat=True)}
                keys = [key for key in keys if key not in kept]
        for table in (SearchDocument, ImageVector, IndexEntry):
            table.objects.using(using).filter(
                content_type=content_type, object_pk__in=keys
            ).delete()


class _Forget:
    """The products one transaction deleted, cleaned up again once, after it."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.keys: dict[Any, dict[str, None]] = {}
        self.ran = False

    def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        for content_type, keys in self.keys.items():
            _forget(content_type, list(keys), self.using, locked=True)


def _pending(using: str | None, attribute: str, factory: Any) -> Any:
    """The batch of this kind that the connection's current transaction
    collects (one that ran belongs to a transaction already over)."""
    connection = transaction.get_connection(using)
    batch = getattr(connection, attribute, None)
    if batch is None or batch.ran:
        batch = factory(connection.alias)
        setattr(connection, attribute, batch)
    return batch


def _gallery_handler(product_model: type[models.Model], fk: str) -> Any:
    def changed(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
        if raw or getattr(_state, "paused", False):
            return
        product_pk = getattr(instance, sender._meta.get_field(fk).attname)
        if product_pk is None:
            return
        using = kwargs.get("using")
        pks = _with_variants(product_model, [product_pk], using)
        schedule_indexing(product_model, pks, using=using)

    return changed


def schedule_indexing(
    model: type[models.Model], pks: list[Any], *, using: str | None = None
) -> None:
    """
    Index ``pks`` once the current transaction commits (sync or Celery).

    Every product a transaction schedules is indexed by one run after it
    commits: an admin save of a product and its gallery rows sends one
    signal per row, and a run per signal decoded the same images again
    (and counted a failing image once per row against ``MAX_ATTEMPTS``).
    """
    batch = _pending(using, "_shop_search_batch", _Batch)
    batch.add(model, pks)
    # Each save registers the batch; the first call after the commit indexes
    # everything the transaction scheduled, the others find nothing left. (A
    # savepoint rolled back takes only its own registrations away.)
    transaction.on_commit(batch, using=using, robust=True)


class _Batch:
    """The products one transaction scheduled, per model, indexed once."""

    def __init__(self, using: str) -> None:
        # (Indexing reads and writes through each model's own database.)
        self.pks: dict[type[models.Model], dict[Any, None]] = {}
        self.ran = False

    def add(self, model: type[models.Model], pks: list[Any]) -> _Batch:
        self.pks.setdefault(model, {}).update(dict.fromkeys(pks))
        return self

    def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        for model, pks in self.pks.items():
            if shop_search_settings.INDEXING_MODE != "celery":
                _index_now(model, list(pks))
                continue
            from .tasks import index_products

            try:
                index_products.delay(model._meta.label, list(pks))
            except Exception:  # the broker is down: the products stay pending
                logger.exception(
                    "shop_search: queueing %s pks=%s failed; run "
                    "shop_search_reindex later",
                    model._meta.label,
                    list(pks),
                )


def _index_now(model: type[models.Model], pks: list[Any]) -> None:
    from .indexing import index_objects

    try:
        index_objects(model, pks)
    except Exception:
        # The product is saved; it stays "missing" and shop_search_reindex
        # picks it up. Never let indexing break the shop's request.
        logger.exception(
            "shop_search: indexing %s pks=%s failed; run shop_search_reindex later",
            model._meta.label,
            pks,
        )


def connect_signals() -> None:
    """Connect the handlers of every searchable model and its galleries."""
    disconnect_signals()
    for model in searchable_models():
        label = model._meta.label_lower
        for signal, handler, name in (
            (post_save, index_on_save, "post"),
            (post_delete, forget_on_delete, "del"),
        ):
            uid = f"shop_search.{name}:{label}"
            signal.connect(handler, sender=model, dispatch_uid=uid)
            _connected.append((signal, model, uid))
        for gallery, fk, _file in declaration(model).galleries():
            handler = _gallery_handler(model, fk)
            for signal, name in ((post_save, "gsave"), (post_delete, "gdel")):
                uid = f"shop_search.{name}:{label}:{gallery._meta.label_lower}"
                signal.connect(handler, sender=gallery, dispatch_uid=uid, weak=False)
                _connected.append((signal, gallery, uid))


def disconnect_signals() -> None:
    while _connected:
        signal, sender, uid = _connected.pop()
        signal.disconnect(sender=sender, dispatch_uid=uid)
