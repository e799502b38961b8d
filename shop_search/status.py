"""
Where each product stands in the index, derived from its images and its
:class:`~shop_search.models.IndexEntry`, in SQL (for counts, filters and
finding what bulk updates changed) and for one object.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Cast

from .conf import shop_search_settings
from .models import IndexEntry, IndexStatus, serving
from .registry import declaration, images_digest

__all__ = [
    "NO_IMAGES",
    "with_state",
    "status_filter",
    "needs_work_filter",
    "annotated_status",
    "status_of",
    "entry_for",
]

#: The digest of a product without images.
NO_IMAGES = hashlib.md5(b"").hexdigest()


def _entries(
    model: type[models.Model], image_model: str, using: str
) -> models.QuerySet:
    content_type = ContentType.objects.db_manager(using).get_for_model(
        model, for_concrete_model=False
    )
    return IndexEntry.objects.using(using).filter(
        content_type=content_type,
        image_model=image_model,
        object_pk=Cast(OuterRef("pk"), models.CharField()),
    )


def with_state(
    queryset: models.QuerySet, image_model: str | None = None
) -> models.QuerySet:
    """
    ``queryset`` annotated with ``_ss_digest`` (its images now),
    ``_ss_entry_digest``, ``_ss_error`` and ``_ss_attempts`` (its entry for
    ``image_model``, default the serving one; NULL when it has none).
    """
    model, using = queryset.model, queryset.db
    image_model = image_model or serving(using, max_age=2).image_model
    entry = _entries(model, image_model, using)
    return queryset.annotate(
        _ss_digest=declaration(model).images_sql(),
        _ss_entry_digest=Subquery(entry.values("digest")[:1]),
        _ss_error=Subquery(entry.values("error")[:1]),
        _ss_attempts=Subquery(entry.values("attempts")[:1]),
    )


def status_filter(status: str) -> Q:
    """A ``Q`` over :func:`with_state`'s annotations selecting ``status``."""
    no_image = Q(_ss_digest=NO_IMAGES)
    same = Q(_ss_entry_digest=models.F("_ss_digest"))
    failed = same & ~Q(_ss_error="")
    given_up = failed & Q(_ss_attempts__gte=shop_search_settings.MAX_ATTEMPTS)
    queries = {
        IndexStatus.NO_IMAGE: no_image,
        IndexStatus.MISSING: ~no_image & Q(_ss_entry_digest__isnull=True),
        IndexStatus.STALE: ~no_image & Q(_ss_entry_digest__isnull=False) & ~same,
        IndexStatus.GIVEN_UP: ~no_image & given_up,
        IndexStatus.FAILED: ~no_image & failed & ~given_up,
        IndexStatus.INDEXED: ~no_image & same & Q(_ss_error=""),
    }
    return queries[IndexStatus(status)]


def needs_work_filter() -> Q:
    """Rows whose entry does not match their images, or failed and may retry:
    what ``shop_search_reindex`` encodes (no-image rows get an empty entry)."""
    same = Q(_ss_entry_digest=models.F("_ss_digest"))
    retry = (
        same & ~Q(_ss_error="") & Q(_ss_attempts__lt=shop_search_settings.MAX_ATTEMPTS)
    )
    return Q(_ss_entry_digest__isnull=True) | ~same | retry


def entry_for(obj: Any, image_model: str | None = None) -> IndexEntry | None:
    using = obj._state.db or "default"
    image_model = image_model or serving(using, max_age=2).image_model
    content_type = ContentType.objects.db_manager(using).get_for_model(
        type(obj), for_concrete_model=False
    )
    return (
        IndexEntry.objects.using(using)
        .filter(
            content_type=content_type, object_pk=str(obj.pk), image_model=image_model
        )
        .first()
    )


def _status(digest: str, entry: tuple[str, str, int] | None) -> str:
    """The status from a product's image digest and its entry's
    (digest, error, attempts): the rules :func:`status_filter` states in SQL."""
    if digest == NO_IMAGES:
        return IndexStatus.NO_IMAGE
    if entry is None:
        return IndexStatus.MISSING
    entry_digest, error, attempts = entry
    if entry_digest != digest:
        return IndexStatus.STALE
    if error:
        if attempts >= shop_search_settings.MAX_ATTEMPTS:
            return IndexStatus.GIVEN_UP
        return IndexStatus.FAILED
    return IndexStatus.INDEXED


def annotated_status(obj: Any) -> str:
    """The status of a row read through :func:`with_state` (no query)."""
    entry = None
    if obj._ss_entry_digest is not None:
        entry = (obj._ss_entry_digest, obj._ss_error, obj._ss_attempts)
    return _status(obj._ss_digest, entry)


def status_of(obj: Any) -> str:
    """``obj``'s :class:`~shop_search.models.IndexStatus` value (one query)."""
    digest = images_digest(declaration(type(obj)).image_sources(obj))
    entry = entry_for(obj) if digest != NO_IMAGES else None
    return _status(digest, entry and (entry.digest, entry.error, entry.attempts))
