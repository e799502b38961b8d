"""
The write path of a product's words: :class:`~shop_search.models.SearchDocument`
rows for the lexical and semantic text channels. Called by
:func:`shop_search.indexing.index_objects` and ``shop_search_reindex``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models.functions import Cast

from .encoders import encoder_for
from .exceptions import EncodingError, ModelLoadError
from .models import serving

__all__ = ["DocumentResult", "index_documents"]

logger = logging.getLogger(__name__)


@dataclass
class DocumentResult:
    """Counts from one call of :func:`index_documents`."""

    written: int = 0
    current: int = 0
    removed: int = 0


def index_documents(
    model: type[models.Model],
    pks: Iterable[Any] | None = None,
    *,
    force: bool = False,
    chunk_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> DocumentResult:
    """
    Write the :class:`~shop_search.models.SearchDocument` of ``model`` rows
    ``pks`` (None: every row, and documents of deleted rows are removed).

    A document is rewritten only when its words changed (a digest of the
    folded text) or its vector is not from the serving text model; its
    vector is the text model's embedding of the product's names. Cheap
    enough to run on every save. ``progress`` gets the rows done per chunk.
    """
    from django.contrib.contenttypes.models import ContentType

    from .documents import build
    from .models import SearchDocument

    content_type = ContentType.objects.db_manager(model._base_manager.db).get_for_model(
        model, for_concrete_model=False
    )
    result = DocumentResult()
    documents = SearchDocument.objects.filter(content_type=content_type)
    rows = model._base_manager.order_by("pk")
    if pks is not None:
        rows = rows.filter(pk__in=list(pks))
        present = set()
    else:
        present = None
    text_model = serving(model._base_manager.db).text_model
    last = None
    while True:
        chunk = rows if last is None else rows.filter(pk__gt=last)
        chunk = list(chunk[:chunk_size])
        if not chunk:
            break
        last = chunk[-1].pk
        keys = [str(row.pk) for row in chunk]
        stored = {
            d["object_pk"]: d
            for d in documents.filter(object_pk__in=keys).values(
                "object_pk", "digest", "text_model"
            )
        }
        changed = []
        for row, key in zip(chunk, keys, strict=True):
            if present is not None:
                present.add(key)
            document = build(row)
            old = stored.get(key)
            if (
                not force
                and old is not None
                and old["digest"] == document.digest
                and old["text_model"] == text_model
            ):
                result.current += 1
                continue
            changed.append((key, document))
        if changed:
            _write_documents(content_type, changed, text_model)
            result.written += len(changed)
        if progress is not None:
            progress(len(chunk))
    if pks is not None:
        gone = {str(pk) for pk in pks} - present
        if gone:
            result.removed, _ = documents.filter(object_pk__in=gone).delete()
    else:
        orphans = documents.exclude(
            object_pk__in=model._base_manager.annotate(
                _key=Cast("pk", models.CharField())
            ).values("_key")
        )
        result.removed, _ = orphans.delete()
    return result


def _write_documents(content_type: Any, changed: list, text_model: str) -> None:
    from .models import SearchDocument

    vectors: list[Any] = [None] * len(changed)
    titles = [document.names.replace("\n", " / ") for _key, document in changed]
    try:
        encoder = encoder_for(text_model)
        # All at once: the encoder batches texts of similar lengths together
        # (less padding than batches in pk order), and encodes each distinct
        # title once (variants often share their parent's names).
        distinct = list(dict.fromkeys(titles))
        encoded = dict(zip(distinct, encoder.encode_texts(distinct), strict=True))
        vectors = [encoded[title] for title in titles]
    except (EncodingError, ModelLoadError) as exc:
        # The words still count (lexical channels); the semantic channel
        # waits for the next run.
        logger.warning("shop_search: product texts not encoded: %s", exc)
        vectors, text_model = [None] * len(changed), ""
    SearchDocument.objects.bulk_create(
        [
            SearchDocument(
                content_type=content_type,
                object_pk=key,
                title=document.title,
                names=document.names,
                body=document.body,
                identifiers=document.identifiers,
                digest=document.digest,
                text_model=text_model if vector is not None else "",
                vector=vector,
            )
            for (key, document), vector in zip(changed, vectors, strict=True)
        ],
        update_conflicts=True,
        unique_fields=["content_type", "object_pk"],
        update_fields=[
            "title",
            "names",
            "body",
            "identifiers",
            "digest",
            "text_model",
            "vector",
            "updated_at",
        ],
    )
