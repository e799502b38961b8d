"""
Switching embedding models without a gap or a mix.

Searches compare query vectors with product vectors of the *serving* models,
recorded in :class:`~shop_search.models.IndexState` (created from
``IMAGE_MODEL``/``TEXT_MODEL`` on first use). When the settings name another
image model, the site is *in transition*:

1. searches keep using the serving models and their vectors on the rows;
2. indexing encodes each product with the new model into
   :class:`~shop_search.models.PendingEmbedding` (and keeps the row's
   serving vector current for new or changed images);
3. when every product with an image has its new vector, ``promote()`` copies
   them onto the rows and records the new models as serving, in one
   transaction: searches move from all-old to all-new vectors at once.

``shop_search_reindex`` does steps 2 and 3; ``shop_search_status`` shows the
progress. Switching back before the promotion simply abandons the pending
vectors.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models, transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import MD5, Cast, Coalesce

from .conf import shop_search_settings
from .encoders import image_model_id
from .models import (
    IndexState,
    PendingEmbedding,
    Serving,
    serving,
)

__all__ = [
    "Serving",
    "serving",
    "in_transition",
    "missing_pending_q",
    "store_pending",
    "transition_progress",
    "promote",
    "warm_up",
]


def in_transition(using: str = "default") -> bool:
    """Whether ``IMAGE_MODEL`` names another model than the serving one."""
    return serving(using).image_model != image_model_id()


def _outer_fingerprint(model: Any) -> Any:
    """``models.image_fingerprint`` of the outer row's image, computed in SQL."""
    return MD5(
        Coalesce(
            OuterRef(model.search_image_field),
            models.Value(""),
            output_field=models.CharField(),
        )
    )


def missing_pending_q(model: Any) -> models.Q:
    """Rows with an image that have no new-model vector for their current image."""

    pending = PendingEmbedding.objects.filter(
        model_label=model._meta.label,
        object_pk=Cast(OuterRef("pk"), models.CharField()),
        image_model=image_model_id(),
        fingerprint=_outer_fingerprint(model),
    )
    image = model.search_image_field
    has_image = ~models.Q(**{image: ""}) & models.Q(**{f"{image}__isnull": False})
    return has_image & models.Q(search_error="") & ~Exists(pending)


def store_pending(model: Any, rows: list[tuple[Any, str, Any]], model_id: str) -> None:
    """Upsert new-model vectors: ``rows`` of (pk, fingerprint, vector)."""

    field = model._meta.get_field("search_embedding")
    PendingEmbedding.objects.using(model._base_manager.db).bulk_create(
        [
            PendingEmbedding(
                model_label=model._meta.label,
                object_pk=str(pk),
                image_model=model_id,
                fingerprint=fingerprint,
                vector=field.get_prep_value(vector),
            )
            for pk, fingerprint, vector in rows
        ],
        update_conflicts=True,
        unique_fields=["model_label", "object_pk", "image_model"],
        update_fields=["fingerprint", "vector", "created_at"],
    )


def transition_progress(model: Any) -> tuple[int, int]:
    """(products with a new-model vector, products that need one)."""
    image = model.search_image_field
    has_image = ~models.Q(**{image: ""}) & models.Q(**{f"{image}__isnull": False})
    eligible = model._base_manager.filter(has_image, search_error="")
    total = eligible.count()
    missing = eligible.filter(missing_pending_q(model)).count()
    return total - missing, total


def promote(searchable: list[Any], *, using: str = "default") -> int | None:
    """
    If every searchable model's products have new-model vectors, copy them
    onto the rows and make the configured models the serving ones, in one
    transaction. Returns the number of rows switched, or None if not complete
    (or not in transition).
    """

    target = image_model_id()
    if not in_transition(using):
        return None
    with transaction.atomic(using=using):
        # Lock the state so two re-indexes cannot promote at once.
        state = IndexState.objects.using(using).select_for_update().get(pk=1)
        if state.image_model == target:
            return None
        for model in searchable:
            if (
                model._base_manager.using(using)
                .filter(missing_pending_q(model))
                .exists()
            ):
                transaction.set_rollback(True, using=using)
                return None
        switched = 0
        for model in searchable:
            switched += _copy_pending(model, target, using)
        state.image_model = target
        state.text_model = shop_search_settings.TEXT_MODEL
        state.save(using=using)
        PendingEmbedding.objects.using(using).filter(image_model=target).delete()
    return switched


def _copy_pending(model: Any, target: str, using: str) -> int:
    table = model._meta.db_table
    field = model._meta.get_field("search_embedding")
    image_column = model._meta.get_field(model.search_image_field).column
    pk_column = model._meta.pk.column
    quote = connections[using].ops.quote_name
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {quote(table)} AS p
               SET search_embedding = pe.vector::{field.db_type(connections[using])},
                   search_model = pe.image_model,
                   search_fingerprint = pe.fingerprint,
                   search_error = '',
                   search_attempts = 0,
                   search_indexed_at = now()
              FROM shop_search_pendingembedding AS pe
             WHERE pe.model_label = %s
               AND pe.image_model = %s
               AND pe.object_pk = p.{quote(pk_column)}::text
               AND pe.fingerprint = md5(coalesce(p.{quote(image_column)}, ''))
            """,
            [model._meta.label, target],
        )
        return cursor.rowcount


def warm_up() -> None:
    """
    Load both serving models and run one tiny forward pass each, so that the
    first shopper's request does not pay for it. Call it from ``wsgi.py``
    (after ``get_wsgi_application()``) or a worker's start hook.
    """
    from PIL import Image

    current = serving()
    current.text_encoder.encode_texts(["warm up"])
    current.image_encoder.encode_images([Image.new("RGB", (32, 32), "white")])
