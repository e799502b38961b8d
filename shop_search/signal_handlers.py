"""
Keep vectors current when products are saved.

``pre_save`` reloads the ``search_*`` columns of an existing row, so saving a
product object never writes back an out-of-date vector. ``post_save`` queues
indexing with ``transaction.on_commit`` when the image is new or changed, or
the vector is missing or from another model; a rolled-back save queues
nothing. Fixture loads (``raw``) are skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from .conf import shop_search_settings
from .models import (
    BOOKKEEPING_FIELDS,
    SearchableProduct,
    searchable_models,
)

__all__ = [
    "connect_signals",
    "disconnect_signals",
    "indexing_paused",
    "schedule_indexing",
]

logger = logging.getLogger(__name__)
_state = threading.local()


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


def refresh_bookkeeping(
    sender: type[SearchableProduct],
    instance: SearchableProduct,
    raw: bool = False,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    if raw or instance._state.adding or instance.pk is None:
        return
    fields = [
        name
        for name in BOOKKEEPING_FIELDS
        if update_fields is None or name in update_fields
    ]
    if not fields:
        return
    values = (
        sender._base_manager.using(kwargs.get("using") or instance._state.db)
        .filter(pk=instance.pk)
        .values(*fields)
        .first()
    )
    if values:
        for name, value in values.items():
            setattr(instance, name, value)


def index_on_save(
    sender: type[SearchableProduct],
    instance: SearchableProduct,
    created: bool = False,
    raw: bool = False,
    update_fields: Any = None,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    if raw or getattr(_state, "paused", False):
        return
    # Any save may change the product's words; indexing skips what is
    # current (its image vector, an unchanged document) with one query each.
    schedule_indexing(sender, [instance.pk], using=using)


def forget_on_delete(
    sender: type[SearchableProduct], instance: SearchableProduct, **kwargs: Any
) -> None:
    from django.contrib.contenttypes.models import ContentType

    from .models import SearchDocument

    SearchDocument.objects.filter(
        content_type=ContentType.objects.get_for_model(sender),
        object_pk=str(instance.pk),
    ).delete()


def schedule_indexing(
    model: type[SearchableProduct], pks: list[Any], *, using: str | None = None
) -> None:
    """Index ``pks`` once the current transaction commits (sync or Celery)."""
    label = model._meta.label
    pks = list(pks)
    if shop_search_settings.INDEXING_MODE == "celery":
        from .tasks import index_products

        def send() -> None:
            index_products.delay(label, pks)

        transaction.on_commit(send, using=using, robust=True)
    else:
        transaction.on_commit(lambda: _index_now(model, pks), using=using, robust=True)


def _index_now(model: type[SearchableProduct], pks: list[Any]) -> None:
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
    for model in searchable_models():
        label = model._meta.label_lower
        pre_save.connect(
            refresh_bookkeeping, sender=model, dispatch_uid=f"shop_search.pre:{label}"
        )
        post_save.connect(
            index_on_save, sender=model, dispatch_uid=f"shop_search.post:{label}"
        )
        post_delete.connect(
            forget_on_delete, sender=model, dispatch_uid=f"shop_search.del:{label}"
        )


def disconnect_signals() -> None:
    for model in searchable_models():
        label = model._meta.label_lower
        pre_save.disconnect(sender=model, dispatch_uid=f"shop_search.pre:{label}")
        post_save.disconnect(sender=model, dispatch_uid=f"shop_search.post:{label}")
        post_delete.disconnect(sender=model, dispatch_uid=f"shop_search.del:{label}")
