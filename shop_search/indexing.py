"""
The only write path: every vector shop_search stores is written here.

Signal handlers (the product's and its gallery's), the Celery task, the
admin action and the management command all call :func:`index_objects`.
It is idempotent: a product whose images are unchanged since its vectors
were made is skipped, and of a changed gallery only the new or replaced
images are encoded (an image already embedded elsewhere, such as the
parent's photo a variant shows, is copied, not encoded again). A product
whose image cannot be loaded or encoded is marked failed with the reason;
it never raises for one bad product.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction

from .conf import shop_search_settings
from .encoders import encoder_for, get_image_encoder
from .encoders.pixels import decode_batch
from .exceptions import EncodingError, ImageError
from .models import ImageVector, IndexEntry
from .registry import ImageSource, declaration, images_digest
from .status import needs_work_filter, with_state
from .switching import in_transition, serving
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


def _image_models(using: str) -> list[str]:
    """The models to write vectors for: the serving one, and during a switch
    the configured one (see :mod:`shop_search.switching`)."""
    current = serving(using).image_model
    if in_transition(using):
        return [current, get_image_encoder().model_id]
    return [current]


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


@dataclass
class _Work:
    """One product's work for one image model."""

    row: Any
    image_model: str
    sources: list[ImageSource]
    digest: str
    group: str
    stored: dict[str, tuple[str, int, str]]  # source -> (fingerprint, position, group)
    previous: IndexEntry | None
    vectors: dict[str, Any] = field(default_factory=dict)  # source -> vector
    errors: list[str] = field(default_factory=list)

    @property
    def to_encode(self) -> list[ImageSource]:
        return [
            s
            for s in self.sources
            if s.key not in self.vectors
            and self.stored.get(s.key, ("",))[0] != s.fingerprint
        ]


@dataclass
class _Batch:
    pks: list[Any]
    work: list[_Work]
    encoded: Future  # done when each item has its vectors or errors


def _prepare(
    model: type[models.Model], pks: list[Any], force: bool, pools: tuple[Any, Any]
) -> _Batch:
    """Find what the rows of ``pks`` need; queue the decoding and encoding of
    the new images on ``pools`` (a decoding and an encoding thread)."""
    decl = declaration(model)
    using = model._base_manager.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        model, for_concrete_model=False
    )
    rows = list(_with_galleries(model._base_manager.filter(pk__in=pks)).order_by("pk"))
    keys = [str(row.pk) for row in rows]
    work: list[_Work] = []
    for image_model in _image_models(using):
        entries = {
            e.object_pk: e
            for e in IndexEntry.objects.using(using).filter(
                content_type=content_type, image_model=image_model, object_pk__in=keys
            )
        }
        stored: dict[str, dict[str, tuple[str, int, str]]] = {}
        for object_pk, source, fingerprint, position, group in (
            ImageVector.objects.using(using)
            .filter(
                content_type=content_type, image_model=image_model, object_pk__in=keys
            )
            .values_list("object_pk", "source", "fingerprint", "position", "group_pk")
        ):
            stored.setdefault(object_pk, {})[source] = (fingerprint, position, group)
        for row, key in zip(rows, keys, strict=True):
            sources = decl.image_sources(row)
            digest = images_digest(sources)
            entry = entries.get(key)
            settled = (
                entry is not None
                and entry.digest == digest
                and (
                    not entry.error
                    or entry.attempts >= shop_search_settings.MAX_ATTEMPTS
                )
                and all(
                    stored.get(key, {}).get(s.key, ("",))[0] == s.fingerprint
                    for s in sources
                )
            )
            if settled and not force:
                continue
            item = _Work(
                row,
                image_model,
                sources,
                digest,
                decl.group_key(row),
                {} if force else stored.get(key, {}),
                entry,
            )
            work.append(item)
    if not force:
        _reuse_vectors(work, using)
    needed: dict[str, ImageSource] = {}
    for item in work:
        for source in item.to_encode:
            needed.setdefault(source.fingerprint, source)
    # Decoded straight to the model's input square when every model in play
    # takes the same one (see shop_search.encoders.pixels).
    sizes = {
        getattr(encoder_for(image_model), "image_size", None)
        for image_model in {item.image_model for item in work if item.to_encode}
    }
    size = sizes.pop() if len(sizes) == 1 else None
    decoding, encoding = pools
    decoded = decoding.submit(_decode, list(needed.values()), size)
    return _Batch(pks, work, encoding.submit(_encode_all, work, decoded))


def _with_galleries(queryset: models.QuerySet) -> models.QuerySet:
    """``queryset`` fetching the declared galleries (and the parent's, for
    variants) in one query each, instead of one per product. Through the
    gallery's base manager, as the SQL digest reads them."""
    decl = declaration(queryset.model)
    lookups = []
    for path in decl.images:
        gallery = decl.gallery(path)
        if gallery is not None:
            relation = path.split("__", 1)[0]
            every = gallery[0]._base_manager.all()
            lookups.append(models.Prefetch(relation, queryset=every))
            if decl.parent:
                lookups.append(
                    models.Prefetch(f"{decl.parent}__{relation}", queryset=every)
                )
    if decl.parent:
        queryset = queryset.select_related(decl.parent)
    return queryset.prefetch_related(*lookups)


def _reuse_vectors(work: list[_Work], using: str) -> None:
    """Vectors of the same image already stored (the same file name) are
    copied instead of encoded again: a variant showing its parent's photo, a
    gallery reordered or moved."""
    by_model: dict[str, set[str]] = {}
    for item in work:
        by_model.setdefault(item.image_model, set()).update(
            s.fingerprint for s in item.to_encode
        )
    for image_model, fingerprints in by_model.items():
        if not fingerprints:
            continue
        known = dict(
            ImageVector.objects.using(using)
            .filter(image_model=image_model, fingerprint__in=fingerprints)
            .order_by("fingerprint", "pk")
            .distinct("fingerprint")
            .values_list("fingerprint", "vector")
        )
        for item in work:
            if item.image_model != image_model:
                continue
            for source in item.to_encode:
                if source.fingerprint in known:
                    item.vectors[source.key] = known[source.fingerprint]


def _decode(sources: list[ImageSource], size: int | None) -> dict[str, Any]:
    """``{fingerprint: image or ImageError}``, decoded in parallel threads."""
    if not sources:
        return {}
    images = decode_batch([source.file for source in sources], size=size)
    return {
        source.fingerprint: image for source, image in zip(sources, images, strict=True)
    }


def _encode_all(work: list[_Work], decoded: Future) -> None:
    """Encode a batch's decoded images with each image model in play."""
    images = decoded.result()
    for image_model in {item.image_model for item in work}:
        _encode(image_model, [w for w in work if w.image_model == image_model], images)


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


def _encode(image_model: str, work: list[_Work], decoded: dict[str, Any]) -> None:
    """One forward pass for the batch's new images of ``image_model``; if it
    fails, one image at a time."""
    wanted: dict[str, Any] = {}
    for item in work:
        for source in item.to_encode:
            image = decoded.get(source.fingerprint)
            if isinstance(image, ImageError):
                item.errors.append(f"{image.code}: {image.message} ({source.key})")
            elif image is not None:
                wanted.setdefault(source.fingerprint, image)
    vectors: dict[str, Any] = {}
    if wanted:
        encoder = encoder_for(image_model)
        fingerprints = list(wanted)
        try:
            encoded = encoder.encode_images([wanted[f] for f in fingerprints])
            vectors = dict(zip(fingerprints, encoded, strict=True))
        except EncodingError:
            for fingerprint in fingerprints:
                try:
                    vectors[fingerprint] = encoder.encode_images([wanted[fingerprint]])[
                        0
                    ]
                except EncodingError:
                    pass
    for item in work:
        for source in item.to_encode:
            if source.fingerprint in vectors:
                item.vectors[source.key] = vectors[source.fingerprint]
            elif not isinstance(decoded.get(source.fingerprint), ImageError):
                item.errors.append(
                    f"encoding_failed: the model could not encode this image "
                    f"({source.key})"
                )


def _write(content_type: Any, work: list[_Work], using: str) -> list[str]:
    """
    Store the vectors and entries of ``work`` (a batch, inside its
    transaction) in a few statements for the whole batch, not a few per
    product; what happened to each item's product.
    """
    if not work:
        return []
    vectors = ImageVector.objects.using(using).filter(content_type=content_type)
    keys = {str(item.row.pk) for item in work}
    models_ = {item.image_model for item in work}
    keep = {
        (str(item.row.pk), item.image_model): {s.key for s in item.sources}
        for item in work
    }
    # Vectors of images the products no longer show.
    stale: list[Any] = []
    removed: dict[tuple[str, str], int] = {}
    for pk, object_pk, image_model, source in vectors.filter(
        object_pk__in=keys, image_model__in=models_
    ).values_list("pk", "object_pk", "image_model", "source"):
        wanted = keep.get((object_pk, image_model))
        if wanted is not None and source not in wanted:
            stale.append(pk)
            removed[object_pk, image_model] = (
                removed.get((object_pk, image_model), 0) + 1
            )
    if stale:
        vectors.filter(pk__in=stale).delete()
    new = [
        ImageVector(
            content_type=content_type,
            object_pk=str(item.row.pk),
            group_pk=item.group,
            image_model=item.image_model,
            source=source.key,
            position=source.position,
            fingerprint=source.fingerprint,
            vector=item.vectors[source.key],
        )
        for item in work
        for source in item.sources
        if source.key in item.vectors
    ]
    if new:
        ImageVector.objects.using(using).bulk_create(
            new,
            update_conflicts=True,
            unique_fields=["content_type", "object_pk", "image_model", "source"],
            update_fields=["group_pk", "position", "fingerprint", "vector"],
        )
    entries = []
    outcomes = []
    for item in work:
        key = str(item.row.pk)
        for source in item.sources:
            fingerprint, position, group = item.stored.get(source.key, ("", -1, ""))
            if source.key not in item.vectors and fingerprint == source.fingerprint:
                if (position, group) != (source.position, item.group):
                    vectors.filter(
                        object_pk=key, image_model=item.image_model, source=source.key
                    ).update(position=source.position, group_pk=item.group)
        error = "; ".join(item.errors)[:2000]
        previous = item.previous
        attempts = 0
        if error:
            again = (
                previous is not None
                and previous.digest == item.digest
                and previous.error
            )
            attempts = (previous.attempts if again else 0) + 1
        entries.append(
            IndexEntry(
                content_type=content_type,
                object_pk=key,
                image_model=item.image_model,
                digest=item.digest,
                error=error,
                attempts=attempts,
            )
        )
        gone = removed.get((key, item.image_model), 0)
        if error:
            outcomes.append("failed")
        elif any(source.key in item.vectors for source in item.sources):
            outcomes.append("encoded")
        elif not item.sources:
            outcomes.append("cleared" if gone else "skipped")
        else:
            outcomes.append("encoded" if gone else "skipped")
    IndexEntry.objects.using(using).bulk_create(
        entries,
        update_conflicts=True,
        unique_fields=["content_type", "object_pk", "image_model"],
        update_fields=["digest", "error", "attempts", "indexed_at"],
    )
    return outcomes
