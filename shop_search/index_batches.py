"""
The stages of one indexing batch, for :func:`shop_search.indexing.index_objects`.

Its one job: turn a batch of product rows into stored image vectors. It
finds what each row needs for each image model in play (skipping what is
settled, copying vectors of files already embedded), decodes the new
images, encodes them, and writes the batch's vectors and entries in a few
statements. :mod:`shop_search.indexing` owns the threads these stages run
in and the transaction around :func:`_write`, and counts the outcome;
nothing else imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import connections, models

from .conf import shop_search_settings
from .encoders import encoder_for, get_image_encoder
from .encoders.pixels import decode_batch
from .exceptions import EncodingError, ImageError
from .models import ImageVector, IndexEntry
from .registry import ImageSource, declaration, images_digest
from .switching import in_transition, serving


def _image_models(using: str) -> list[str]:
    """The models to write vectors for: the serving one, and during a switch
    the configured one (see :mod:`shop_search.switching`)."""
    current = serving(using).image_model
    if in_transition(using):
        return [current, get_image_encoder().model_id]
    return [current]


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


def lock_products(content_type: Any, keys: Iterable[str], using: str) -> None:
    """
    Hold until the transaction ends the locks that serialize writes of these
    products' vectors: an indexing batch's check and write, and the clean-up
    after a product is deleted. Without them a batch could write vectors of
    a product deleted, or of a gallery photo removed, while it was encoding.
    PostgreSQL advisory locks, one per product (by the hash of its key),
    taken in hash order so that two holders never wait on each other; the
    shop's own row locks are not touched.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, h)) FROM (SELECT DISTINCT "
            "hashtext(k) AS h FROM unnest(%s::text[]) AS k ORDER BY h) AS ordered",
            [content_type.pk, list(keys)],
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
        (str(item.row.pk), item.image_model): {
            source.key: source.fingerprint for source in item.sources
        }
        for item in work
    }
    encoded = {(str(item.row.pk), item.image_model): item.vectors for item in work}
    # Vectors of images the products no longer show: gone from the product,
    # or replaced by a file that could not be encoded (the old photo's
    # vector would find the product by a picture it no longer shows).
    stale: list[Any] = []
    removed: dict[tuple[str, str], int] = {}
    for pk, object_pk, image_model, source, fingerprint in vectors.filter(
        object_pk__in=keys, image_model__in=models_
    ).values_list("pk", "object_pk", "image_model", "source", "fingerprint"):
        wanted = keep.get((object_pk, image_model))
        if wanted is None:
            continue
        replaced = (
            source in wanted
            and wanted[source] != fingerprint
            and source not in encoded[object_pk, image_model]
        )
        if source not in wanted or replaced:
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
