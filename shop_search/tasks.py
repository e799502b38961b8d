"""
Celery task for ``SHOP_SEARCH['INDEXING_MODE'] = "celery"``.

The task takes plain arguments (a model label and primary keys), is
acknowledged only after it finishes (``acks_late``: a killed worker's task is
delivered again) and is idempotent (current rows are skipped), so a
redelivery writes nothing twice. Database and model-loading errors are
retried with exponential backoff up to ``TASK_MAX_RETRIES``; a bad image is
not an error here, it marks its product failed.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.apps import apps
from django.db import DatabaseError, InterfaceError, OperationalError

from .conf import shop_search_settings
from .exceptions import ModelLoadError

__all__ = ["index_products"]

_TRANSIENT = (OperationalError, InterfaceError, DatabaseError, ModelLoadError)


@shared_task(
    bind=True,
    name="shop_search.index_products",
    acks_late=True,
    reject_on_worker_lost=True,
)
def index_products(
    self: Any, model_label: str, pks: list[Any], force: bool = False
) -> dict[str, int]:
    """Index rows ``pks`` of ``model_label`` ("app_label.Model"); returns
    counts. ``force``: encode again even what is current (the admin's
    "Re-index selected products")."""
    from .indexing import index_objects

    model = apps.get_model(model_label)
    try:
        result = index_objects(model, pks, force=force)
    except _TRANSIENT as exc:
        retries = self.request.retries
        raise self.retry(
            exc=exc,
            countdown=min(2**retries * 5, 600),
            max_retries=shop_search_settings.TASK_MAX_RETRIES,
        ) from exc
    return {
        "encoded": result.encoded,
        "failed": result.failed,
        "skipped": result.skipped,
    }
