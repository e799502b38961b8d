"""
The only write path: every vector shop_search stores is written through here.

Signal handlers (the product's and its gallery's), the Celery task, the
admin action and the management command all call :func:`index_objects`.
It is idempotent: a product whose images are unchanged since its vectors
were made is skipped, and of a changed gallery only the new or replaced
images are encoded (an image already embedded elsewhere, such as the
parent's photo a variant shows, is copied, not encoded again). A product
whose image cannot be loaded or encoded is marked failed with the reason;
it never raises for one bad product.

The stages of one batch (find what rows need, decode, encode, store) are in
:mod:`shop_search.index_batches`; this module runs them, one transaction
per batch, and counts what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction

from .conf import shop_search_settings
from .index_batches import _Batch, _image_models, _prepare, _write, lock_products
from .models import ImageVector, IndexEntry
from .registry import declaration
from .status import needs_work_filter, with_state
from .text_index import DocumentResult, index_documents

__all__ = [
    "IndexResult",
    "DocumentResult",
    "index_documents",
    "index_objects",
    "next_chunk",
    "pending_queryset",
    "forget_deleted",
]

logger = logging.getLogger(__name__)


@dataclass
class IndexResult:
    """Counts from one call of :func:`index_objects`, in products."""

    encoded: int = 0
    failed: int = 0
    skipped: int = 0
    cleared: int = 0
    #: Image vectors written (encoded, or copied from the same file).
    images: int = 0
    encoded_pks: list[Any] = field(default_factory=list)

    def __iadd__(self, other: IndexResult) -> IndexResult:
        self.encoded += other.encoded
        self.images += other.images
        self.failed += other.failed
        self.skipped += other.skipped
        self.cleared += other.cleared
        self.encoded_pks += other.encoded_pks
        return self

    @property
    def processed(self) -> int:
        return self.encoded + self.failed + self.skipped + self.cleared


def pending_queryset(model: type[models.Model]) -> models.QuerySet:
    """
    Rows that need work: new, changed (by save or by ``QuerySet.update()``),
    retryable failures, orphan vectors of products that lost their images,
    and during a model switch, rows without vectors of the new model.
    """
    queryset = model._base_manager.all()
    wanted = models.Q(pk__in=[])
    for image_model in _image_models(queryset.db):
        state = with_state(model._base_manager.all(), image_model)
        wanted |= models.Q(pk__in=state.filter(needs_work_filter()).values("pk"))
    return queryset.filter(wanted)


def forget_deleted(model: type[models.Model]) -> int:
    """Remove the vectors and entries of products deleted without signals
    (raw SQL, ``QuerySet.delete()`` on another database); how many rows."""
    using = model._base_manager.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        model, for_concrete_model=False
    )
    keys = model._base_manager.annotate(
        _key=models.functions.Cast("pk", models.CharField())
    ).values("_key")
    removed = 0
    for table in (ImageVector, IndexEntry):
        count, _ = (
            table.objects.using(using)
            .filter(content_type=content_type)
            .exclude(object_pk__in=keys)
            .delete()
        )
        removed += count
    return removed


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
    model: type[models.Model],
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

    Rows whose images are unchanged since their vectors were made are
    skipped unless ``force`` (which encodes every image again); rows set
    aside after ``MAX_ATTEMPTS`` failures are skipped too unless ``force``.
    Rows without images lose any old vectors. Work is done in pk order,
    about ``batch_size`` images per forward pass, one transaction per batch,
    so an interrupted call keeps what it finished. ``progress`` is called
    after each batch with that batch's counts.

    Raises :class:`~shop_search.exceptions.ModelLoadError` when the model
    cannot be loaded; no row is marked failed for that.
    """
    batch_size = batch_size or shop_search_settings.BATCH_SIZE
    total = IndexResult()
    pks = sorted(set(pks))
    if documents:
        index_documents(model, pks, force=force)
    batches = [pks[i : i + batch_size] for i in range(0, len(pks), batch_size)]
    # Three stages, each in its own thread, so that the model never waits
    # on the others: a batch's images are decoded (in threads of their own)
    # while the model encodes the batch before, and the batch before that is
    # written to the database by this thread, the only one that touches it.
    # Torch, ONNX Runtime and Pillow release the GIL while they work.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="shop_search-decode") as decoding,
        ThreadPoolExecutor(1, thread_name_prefix="shop_search-encode") as encoding,
    ):
        pools = (decoding, encoding)
        try:
            ahead = [_prepare(model, pks, force, pools) for pks in batches[:2]]
            for index in range(len(batches)):
                if index + 2 < len(batches):
                    ahead.append(_prepare(model, batches[index + 2], force, pools))
                result = _finish(model, ahead.pop(0))
                total += result
                if progress is not None:
                    progress(result)
        except BaseException:
            # The model failed to load, the database went away, Ctrl-C: the
            # batches queued behind are not worth encoding.
            for pool in pools:
                pool.shutdown(cancel_futures=True)
            raise
    return total


def _finish(model: type[models.Model], batch: _Batch) -> IndexResult:
    """Write a prepared batch's vectors once encoded, in one transaction."""
    touched = {str(item.row.pk) for item in batch.work}
    result = IndexResult(skipped=len(batch.pks) - len(touched))
    batch.encoded.result()
    using = model._base_manager.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        model, for_concrete_model=False
    )
    outcome: dict[str, str] = {}
    with transaction.atomic(using=using):
        # Checked and written under the products' locks (see lock_products).
        lock_products(content_type, touched, using)
        # A save may have changed the images since they were read; its own
        # indexing is queued, and these vectors would describe the old ones.
        now = {
            str(pk): digest
            for pk, digest in model._base_manager.filter(
                pk__in=[w.row.pk for w in batch.work]
            )
            .annotate(_ss_digest=declaration(model).images_sql())
            .values_list("pk", "_ss_digest")
        }
        current = []
        for item in batch.work:
            key = str(item.row.pk)
            if now.get(key) != item.digest:
                outcome.setdefault(key, "skipped")
                continue
            current.append(item)
            result.images += len(item.vectors)
        for item, what in zip(
            current, _write(content_type, current, using), strict=True
        ):
            key = str(item.row.pk)
            earlier = outcome.get(key)
            # Of a product written for two models (during a switch), a
            # failure or an encoding for the first one stands.
            if what != "failed" and earlier in ("failed", "encoded"):
                what = earlier
            outcome[key] = what
    for key, what in outcome.items():
        setattr(result, what, getattr(result, what) + 1)
        if what == "encoded":
            result.encoded_pks.append(model._meta.pk.to_python(key))
    for item in batch.work:
        if item.errors:
            logger.warning(
                "shop_search: could not index %s pk=%s: %s",
                model._meta.label,
                item.row.pk,
                "; ".join(item.errors),
            )
    return result
