"""
Switching embedding models without a gap or a mix.

Searches compare query vectors with product vectors of the *serving* models,
recorded in :class:`~shop_search.models.IndexState` (created from
``IMAGE_MODEL``/``TEXT_MODEL`` on first use). When the settings name another
image model, the site is *in transition*:

1. searches keep using the serving models and their vectors;
2. indexing writes each product's vectors of the new model beside them
   (:class:`~shop_search.models.ImageVector` rows carry their model), and
   keeps the serving vectors current for new or changed images;
3. when every product with images has its new vectors, :func:`promote`
   records the new models as serving and drops the old vectors, in one
   transaction: searches move from all-old to all-new vectors at once.

``shop_search_reindex`` does steps 2 and 3; ``shop_search_status`` shows the
progress. Switching back before the promotion leaves the new vectors unused
(the next promotion of that model reuses what is still current).
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models, transaction

from .conf import shop_search_settings
from .encoders import image_model_id
from .models import ImageVector, IndexEntry, IndexState, Serving, serving
from .status import NO_IMAGES, with_state

__all__ = [
    "Serving",
    "serving",
    "in_transition",
    "transition_progress",
    "promote",
    "warm_up",
]


def in_transition(using: str = "default") -> bool:
    """Whether ``IMAGE_MODEL`` names another model than the serving one."""
    return serving(using).image_model != image_model_id()


def _with_images(model: Any, image_model: str, using: str) -> models.QuerySet:
    return with_state(model._base_manager.using(using).all(), image_model).exclude(
        _ss_digest=NO_IMAGES
    )


def transition_progress(model: Any, using: str = "default") -> tuple[int, int]:
    """(products with new-model vectors of their current images, products
    with images)."""
    eligible = _with_images(model, image_model_id(), using)
    done = eligible.filter(_ss_entry_digest=models.F("_ss_digest")).count()
    return done, eligible.count()


def promote(searchable: list[Any], *, using: str = "default") -> int | None:
    """
    If every searchable model's products have new-model vectors, make the
    configured models the serving ones and drop the old vectors, in one
    transaction. Returns the number of products switched, or None if not
    complete (or not in transition).
    """
    target = image_model_id()
    if not in_transition(using):
        return None
    from .encoders import encoder_for

    with transaction.atomic(using=using):
        # Lock the state so two re-indexes cannot promote at once.
        state = IndexState.objects.using(using).select_for_update().get(pk=1)
        if state.image_model == target:
            return None
        switched = 0
        for model in searchable:
            done, total = transition_progress(model, using)
            if done < total:
                transaction.set_rollback(True, using=using)
                return None
            switched += total
        # The text model becomes the serving one too: tried first (see
        # promote_text_model); an error rolls the promotion back.
        encoder_for(shop_search_settings.TEXT_MODEL).encode_texts(["probe"])
        old = state.image_model
        state.image_model = target
        state.text_model = shop_search_settings.TEXT_MODEL
        state.save(using=using)
        ImageVector.objects.using(using).filter(image_model=old).delete()
        IndexEntry.objects.using(using).filter(image_model=old).delete()
    from .models import _cache

    _cache.clear()
    return switched


def promote_text_model(using: str = "default") -> str | None:
    """
    When ``TEXT_MODEL`` alone names another model (the image model is the
    serving one): make it the serving text model, and return the one it
    replaces (None when there is nothing to switch; with the image model,
    :func:`promote` switches both). The words' vectors of the old model are
    then rewritten by the next :func:`~shop_search.text_index.index_documents`
    run, which ``shop_search_reindex`` starts at once: a product stays
    findable by its words meanwhile, and by meaning again once rewritten.
    """
    target = shop_search_settings.TEXT_MODEL
    if in_transition(using) or serving(using).text_model == target:
        return None
    # A model that cannot load would leave every product without its words'
    # vector and every text search without a query encoder: it is loaded and
    # tried first (ModelLoadError or EncodingError otherwise, nothing changed).
    from .encoders import encoder_for

    encoder_for(target).encode_texts(["probe"])
    with transaction.atomic(using=using):
        state = IndexState.objects.using(using).select_for_update().get(pk=1)
        if state.text_model == target:
            return None
        old = state.text_model
        state.text_model = target
        state.save(using=using)
    from .models import _cache

    _cache.clear()
    return old


def warm_up() -> None:
    """
    Load both serving models and run one tiny forward pass each, so that the
    first shopper's request does not pay for it. Call it from ``wsgi.py``
    (after ``get_wsgi_application()``) or a worker's start hook.
    """
    from PIL import Image

    already_open = {
        connection.alias
        for connection in connections.all(initialized_only=True)
        if connection.connection is not None
    }
    current = serving()
    current.text_encoder.encode_texts(["warm up"])
    current.image_encoder.encode_images([Image.new("RGB", (32, 32), "white")])
    # Give back the connection serving() opened: a worker's start-up thread
    # serves no request (gunicorn's gthread workers serve from a pool of
    # threads), and a pooled connection held there for good would leave the
    # request threads one short. A connection the caller had open stays so.
    for connection in connections.all(initialized_only=True):
        if connection.alias not in already_open and not connection.in_atomic_block:
            connection.close()
