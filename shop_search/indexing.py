"""
The only write path: every vector shop_search stores is written here.

Signal handlers, the Celery task, the admin action and the management command
all call :func:`index_objects`. It is idempotent: a product whose vector is
current is skipped, so duplicate deliveries and re-runs write nothing twice.
A product whose image cannot be loaded or encoded is marked failed with the
reason; it never raises for one bad product.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import models, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from .conf import shop_search_settings
from .encoders import encoder_for, get_image_encoder
from .exceptions import EncodingError, ImageError, ModelLoadError
from .images import ENCODING_SIZE, load_image
from .models import IndexStatus, SearchableProduct, image_fingerprint, status_q
from .switching import in_transition, missing_pending_q, serving, store_pending

__all__ = [
    "IndexResult",
    "DocumentResult",
    "index_documents",
    "index_objects",
    "next_chunk",
    "pending_queryset",
]

logger = logging.getLogger(__name__)

# Columns read to decide what a row needs (with the pk and the image field).
_STATE_FIELDS = ("search_embedding", "search_fingerprint", "search_error")


@dataclass
class IndexResult:
    """Counts from one call of :func:`index_objects`."""

    encoded: int = 0
    failed: int = 0
    skipped: int = 0
    cleared: int = 0
    encoded_pks: list[Any] = field(default_factory=list)

    def __iadd__(self, other: IndexResult) -> IndexResult:
        self.encoded += other.encoded
        self.failed += other.failed
        self.skipped += other.skipped
        self.cleared += other.cleared
        self.encoded_pks += other.encoded_pks
        return self

    @property
    def processed(self) -> int:
        return self.encoded + self.failed + self.skipped + self.cleared


def pending_queryset(model: type[SearchableProduct]) -> models.QuerySet:
    """
    Rows that need work: missing, stale, retryable failures, orphan vectors,
    and during a model switch, rows without a vector of the new model.
    """
    orphan = status_q(model, IndexStatus.NO_IMAGE) & (
        Q(search_embedding__isnull=False) | ~Q(search_error="")
    )
    needs = (
        status_q(model, IndexStatus.MISSING)
        | status_q(model, IndexStatus.STALE)
        | status_q(model, IndexStatus.FAILED)
        | orphan
    )
    if in_transition(model._base_manager.db):
        needs |= missing_pending_q(model)
    return model._base_manager.filter(needs)


def next_chunk(queryset: models.QuerySet, after: Any, size: int) -> list[Any]:
    """
    The next ``size`` primary keys after ``after`` (None: from the start).

    Keyset pagination (``pk > last``) keeps each query cheap and lets the
    queryset's filter shrink as rows get indexed.
    """
    page = queryset.order_by("pk")
    if after is not None:
        page = page.filter(pk__gt=after)
    return list(page.values_list("pk", flat=True)[:size])


def index_objects(
    model: type[SearchableProduct],
    pks: Iterable[Any],
    *,
    force: bool = False,
    batch_size: int | None = None,
    progress: Callable[[IndexResult], None] | None = None,
    documents: bool = True,
) -> IndexResult:
    """
    Encode the images of ``model`` rows ``pks`` and store their vectors;
    with ``documents`` (default), refresh their words too
    (:func:`index_documents`).

    Rows whose vector is already current (same image fingerprint, same model)
    are skipped unless ``force``; rows set aside after ``MAX_ATTEMPTS``
    failures are skipped too unless ``force``. Rows without an image lose any
    old vector. Work is done in pk order, ``batch_size`` images per forward
    pass, one transaction per batch, so an interrupted call keeps what it
    finished. ``progress`` is called after each batch with that batch's counts.

    Raises :class:`~shop_search.exceptions.ModelLoadError` when the model
    cannot be loaded; no row is marked failed for that.
    """
    batch_size = batch_size or shop_search_settings.BATCH_SIZE
    total = IndexResult()
    pks = sorted(set(pks))
    if documents:
        index_documents(model, pks, force=force)
    batches = [pks[i : i + batch_size] for i in range(0, len(pks), batch_size)]
    # Decoding and resizing the next batch's images runs in a thread while the
    # model encodes this batch (torch releases the GIL); database work stays
    # in this thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shop_search") as pool:
        upcoming = _prepare(model, batches[0], force, pool) if batches else None
        for index in range(len(batches)):
            current = upcoming
            if index + 1 < len(batches):
                upcoming = _prepare(model, batches[index + 1], force, pool)
            result = _finish(model, current)
            total += result
            if progress is not None:
                progress(result)
    return total


@dataclass
class _Batch:
    pks: list[Any]
    rows: list[Any]
    serving: Any
    target: Any
    transition: bool
    decoded: Future  # -> (to_encode, failures, no_image rows)


def _prepare(
    model: type[SearchableProduct], pks: list[Any], force: bool, pool: Any
) -> _Batch:
    """Select the rows of ``pks`` that need work; start decoding their images."""
    image_field = model.search_image_field
    current = serving(model._base_manager.db)
    target = get_image_encoder()
    transition = current.image_model != target.model_id
    settled = status_q(model, IndexStatus.INDEXED) | status_q(
        model, IndexStatus.GIVEN_UP
    )
    rows = model._base_manager.filter(pk__in=pks).order_by("pk")
    rows = rows.annotate(
        _needs_row=models.Case(
            models.When(settled, then=models.Value(force)),
            default=models.Value(True),
            output_field=models.BooleanField(),
        ),
        _needs_pending=models.Case(
            models.When(missing_pending_q(model), then=models.Value(transition)),
            default=models.Value(transition and force),
            output_field=models.BooleanField(),
        ),
    ).filter(Q(_needs_row=True) | Q(_needs_pending=True))
    rows = list(rows.only("pk", image_field, *_STATE_FIELDS))
    decoded = pool.submit(_decode, rows, image_field)
    return _Batch(pks, rows, current, target, transition, decoded)


def _decode(rows: list[Any], image_field: str) -> tuple[list, list, list]:
    to_encode: list[tuple[Any, Any]] = []  # (row, image)
    failures: list[tuple[Any, str]] = []  # (row, reason)
    no_image: list[Any] = []
    for row in rows:
        image_file = getattr(row, image_field)
        if not image_file:
            no_image.append(row)
            continue
        try:
            to_encode.append((row, load_image(image_file, max_side=ENCODING_SIZE)))
        except ImageError as exc:
            failures.append((row, f"{exc.code}: {exc.message}"))
    return to_encode, failures, no_image


def _finish(model: type[SearchableProduct], batch: _Batch) -> IndexResult:
    """Encode a prepared batch and write its vectors, in one transaction."""
    result = IndexResult(skipped=len(batch.pks) - len(batch.rows))
    image_field = model.search_image_field
    using = model._base_manager.db
    current, target = batch.serving, batch.target
    to_encode, failures, no_image = batch.decoded.result()
    for row in no_image:
        if row.search_embedding is not None or row.search_error:
            _write(model, row, _cleared_values())
            result.cleared += 1
        else:
            result.skipped += 1

    # The row keeps a vector of the serving model; during a switch the new
    # model's vectors wait in PendingEmbedding (see shop_search.switching).
    for_row = [item for item in to_encode if item[0]._needs_row]
    row_vectors = _encode(current.image_encoder, for_row, failures)
    for_pending = [item for item in to_encode if item[0]._needs_pending]
    pending_vectors = _encode(target, for_pending, failures) if batch.transition else []
    failed = {id(row) for row, _reason in failures}
    now = timezone.now()
    with transaction.atomic(using=using):
        for (row, _image), vector in zip(for_row, row_vectors, strict=True):
            if vector is None:
                continue
            values = {
                "search_embedding": vector,
                "search_model": current.image_model,
                "search_fingerprint": image_fingerprint(getattr(row, image_field)),
                "search_error": "",
                "search_attempts": 0,
                "search_indexed_at": now,
            }
            if _write(model, row, values):
                result.encoded += 1
                result.encoded_pks.append(row.pk)
            else:
                result.skipped += 1
        pending = [
            (row.pk, image_fingerprint(getattr(row, image_field)), vector)
            for (row, _image), vector in zip(for_pending, pending_vectors, strict=True)
            if vector is not None and id(row) not in failed
        ]
        if pending:
            store_pending(model, pending, target.model_id)
            if not for_row:
                result.encoded += len(pending)
        for row, reason in {id(r): (r, why) for r, why in failures}.values():
            _write(model, row, _failure_values(row, reason, current.image_model))
            result.failed += 1
            logger.warning(
                "shop_search: could not index %s pk=%s: %s",
                model._meta.label,
                row.pk,
                reason,
            )
    return result


def _encode(encoder: Any, to_encode: list, failures: list) -> list[Any]:
    """One forward pass for the batch; if it fails, one image at a time."""
    if not to_encode:
        return []
    images = [image for _row, image in to_encode]
    try:
        return list(encoder.encode_images(images))
    except EncodingError:
        if len(images) == 1:
            vectors: list[Any] = [None]
        else:
            vectors = []
            for image in images:
                try:
                    vectors.append(encoder.encode_images([image])[0])
                except EncodingError:
                    vectors.append(None)
    for (row, _image), vector in zip(to_encode, vectors, strict=True):
        if vector is None:
            failures.append(
                (row, "encoding_failed: the model could not encode this image")
            )
    return vectors


def _write(model: type[SearchableProduct], row: Any, values: dict[str, Any]) -> bool:
    """
    Update one row, only if its image is still the one we read.

    If the image changed meanwhile, the save that changed it has queued its
    own indexing; writing our vector would attach it to the wrong image.
    """
    image_field = model.search_image_field
    current = getattr(row, image_field)
    name = getattr(current, "name", current) or ""
    same_image = Q(**{image_field: name})
    if not name:
        same_image |= Q(**{f"{image_field}__isnull": True})
    return bool(model._base_manager.filter(same_image, pk=row.pk).update(**values))


def _cleared_values() -> dict[str, Any]:
    return {
        "search_embedding": None,
        "search_model": "",
        "search_fingerprint": image_fingerprint(""),
        "search_error": "",
        "search_attempts": 0,
        "search_indexed_at": None,
    }


def _failure_values(row: Any, reason: str, model_id: str) -> dict[str, Any]:
    fingerprint = image_fingerprint(getattr(row, type(row).search_image_field))
    return {
        "search_embedding": None,
        "search_model": model_id,
        "search_fingerprint": fingerprint,
        "search_error": reason[:2000],
        # Count attempts per image: a new image starts again from one.
        "search_attempts": Case(
            When(
                Q(search_fingerprint=fingerprint) & ~Q(search_error=""),
                then=F("search_attempts") + 1,
            ),
            default=Value(1),
        ),
        "search_indexed_at": timezone.now(),
    }


# --- the product's words (lexical and semantic text channels) ----------------


@dataclass
class DocumentResult:
    """Counts from one call of :func:`index_documents`."""

    written: int = 0
    current: int = 0
    removed: int = 0


def index_documents(
    model: type[SearchableProduct],
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
        size = max(1, int(shop_search_settings.BATCH_SIZE))
        vectors = []
        for start in range(0, len(titles), size):
            vectors.extend(encoder.encode_texts(titles[start : start + size]))
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
