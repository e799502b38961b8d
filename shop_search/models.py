"""
Making a product model searchable.

Inherit :class:`SearchableProduct` and say which fields hold the image, the
text and the category::

    from shop_search.models import SearchableProduct

    class Product(SearchableProduct):
        name = models.CharField(max_length=200)
        image = models.ImageField(upload_to="products/")
        category = models.ForeignKey(Category, on_delete=models.PROTECT)

        search_image_field = "image"
        search_text_fields = ["name", "description"]
        search_category_field = "category"

        class Meta(SearchableProduct.Meta):
            pass

The base adds the embedding column, its HNSW index and the bookkeeping that
says whether the vector is current. Run ``makemigrations`` and ``migrate``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core import checks
from django.db import models
from django.db.models import Q
from django.db.models.functions import MD5, Coalesce
from django.utils.translation import gettext_lazy as _

from .conf import shop_search_settings
from .encoders import encoder_for, image_model_id
from .fields import EmbeddingField, EmbeddingIndex

__all__ = [
    "SearchableProduct",
    "IndexStatus",
    "BOOKKEEPING_FIELDS",
    "searchable_models",
    "image_fingerprint",
    "status_q",
    "SearchDocument",
    "Serving",
    "serving",
]

#: Columns that shop_search writes; a product save never overwrites them.
BOOKKEEPING_FIELDS = (
    "search_embedding",
    "search_model",
    "search_fingerprint",
    "search_error",
    "search_attempts",
    "search_indexed_at",
)


class IndexStatus(models.TextChoices):
    """
    Where a product stands in the index, for the models that serve searches
    (see :mod:`shop_search.switching`). Derived from the row, never stored.
    """

    INDEXED = "indexed", _("Indexed")
    MISSING = "missing", _("Not indexed yet")
    STALE = "stale", _("Stale")
    FAILED = "failed", _("Failed, will retry")
    GIVEN_UP = "given_up", _("Failed, set aside")
    NO_IMAGE = "no_image", _("No image")


class SearchableProduct(models.Model):
    """
    Abstract base for a product model whose image is embedded for search.

    Subclasses set ``search_image_field`` (required), and optionally
    ``search_text_fields`` and ``search_category_field``. shop_search writes
    the ``search_*`` columns; the shop's code should treat them as read-only.
    """

    search_image_field: ClassVar[str] = "image"
    search_text_fields: ClassVar[list[str]] = []
    #: The fields holding the product's name(s), translations included
    #: (autocomplete, and the heaviest words); default: the first text field.
    search_name_fields: ClassVar[list[str] | None] = None
    #: Codes a shopper may type to find exactly this product (SKU, GTIN).
    search_identifier_fields: ClassVar[list[str]] = []
    search_category_field: ClassVar[str | None] = None

    search_embedding = EmbeddingField(null=True, blank=True, editable=False)
    search_model = models.CharField(
        _("embedding model"), max_length=255, blank=True, default="", editable=False
    )
    search_fingerprint = models.CharField(
        _("image fingerprint"), max_length=32, blank=True, default="", editable=False
    )
    search_error = models.TextField(
        _("indexing error"), blank=True, default="", editable=False
    )
    search_attempts = models.PositiveSmallIntegerField(
        _("failed indexing attempts"), default=0, editable=False
    )
    search_indexed_at = models.DateTimeField(
        _("indexed at"), null=True, blank=True, editable=False
    )

    class Meta:
        abstract = True
        indexes = [
            EmbeddingIndex(
                name="%(app_label)s_%(class)s_emb", fields=["search_embedding"]
            )
        ]

    @classmethod
    def check(cls, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        if cls._meta.abstract:
            return errors
        errors.extend(_check_declared_fields(cls))
        return errors

    def image_fingerprint(self) -> str:
        return image_fingerprint(getattr(self, self.search_image_field))

    @property
    def search_status(self) -> str:
        """This row's :class:`IndexStatus` value, computed like :func:`status_q`."""
        fingerprint = self.image_fingerprint()
        if not getattr(self, self.search_image_field):
            return IndexStatus.NO_IMAGE
        if self.search_error and self.search_fingerprint == fingerprint:
            if self.search_attempts >= shop_search_settings.MAX_ATTEMPTS:
                return IndexStatus.GIVEN_UP
            return IndexStatus.FAILED
        if self.search_embedding is None:
            return IndexStatus.MISSING
        if (
            self.search_fingerprint != fingerprint
            or self.search_model != serving(max_age=2).image_model
        ):
            return IndexStatus.STALE
        return IndexStatus.INDEXED


def image_fingerprint(image: Any) -> str:
    """
    Fingerprint of an image field's value: MD5 of the stored file name.

    Django gives every upload a new name, so a changed name means a changed
    image. The same value is computed in SQL (``MD5(image)``), which is how
    ``shop_search_reindex --stale`` finds rows changed by ``QuerySet.update()``.
    """
    name = getattr(image, "name", image) or ""
    return hashlib.md5(str(name).encode()).hexdigest()


def status_q(model: type[models.Model], status: str) -> Q:
    """A ``Q`` that selects the rows of ``model`` in ``status`` (an IndexStatus)."""

    image = model.search_image_field
    has_image = ~Q(**{image: ""}) & Q(**{f"{image}__isnull": False})
    same_image = Q(search_fingerprint=MD5(Coalesce(image, models.Value(""))))
    failed = ~Q(search_error="") & same_image
    given_up = failed & Q(search_attempts__gte=shop_search_settings.MAX_ATTEMPTS)
    current = same_image & Q(search_model=serving(max_age=2).image_model)
    has_vector = Q(search_embedding__isnull=False)
    queries = {
        IndexStatus.NO_IMAGE: ~has_image,
        IndexStatus.GIVEN_UP: has_image & given_up,
        IndexStatus.FAILED: has_image & failed & ~given_up,
        IndexStatus.MISSING: has_image & ~failed & ~has_vector,
        IndexStatus.STALE: has_image & ~failed & has_vector & ~current,
        IndexStatus.INDEXED: has_image & ~failed & has_vector & current,
    }
    return queries[IndexStatus(status)]


def searchable_models() -> list[type[SearchableProduct]]:
    """Every installed concrete model that inherits :class:`SearchableProduct`."""
    from django.apps import apps

    return [
        model
        for model in apps.get_models()
        if issubclass(model, SearchableProduct) and not model._meta.proxy
    ]


def _check_declared_fields(model: type[SearchableProduct]) -> list[checks.CheckMessage]:
    declared = [("search_image_field", model.search_image_field)]
    for attribute in ("search_text_fields", "search_identifier_fields"):
        declared += [(attribute, name) for name in getattr(model, attribute)]
    declared += [("search_name_fields", n) for n in model.search_name_fields or []]
    if model.search_category_field:
        declared.append(("search_category_field", model.search_category_field))
    existing = {f.name for f in model._meta.get_fields()}
    errors = []
    for attribute, name in declared:
        if name.split("__")[0] not in existing:
            errors.append(
                checks.Error(
                    f"{model._meta.label}.{attribute} names {name!r}, which is not "
                    f"a field of {model.__name__}.",
                    hint=f"Set {attribute} to one of: {', '.join(sorted(existing))}.",
                    obj=model,
                    id="shop_search.E010",
                )
            )
    if model.search_image_field in existing:
        field = model._meta.get_field(model.search_image_field)
        if not isinstance(field, models.FileField):
            errors.append(
                checks.Error(
                    f"{model._meta.label}.search_image_field names "
                    f"{model.search_image_field!r}, which is a "
                    f"{type(field).__name__}, not an ImageField or FileField.",
                    hint="Point search_image_field at the product's ImageField.",
                    obj=model,
                    id="shop_search.E011",
                )
            )
    if not any(
        isinstance(index, EmbeddingIndex) or "search_embedding" in index.fields
        for index in model._meta.indexes
    ):
        errors.append(
            checks.Warning(
                f"{model._meta.label} has no HNSW index on search_embedding, so "
                f"every search scans the whole table.",
                hint="Let Meta inherit SearchableProduct.Meta "
                "(class Meta(SearchableProduct.Meta): ...), or add an "
                "EmbeddingIndex to Meta.indexes, then run makemigrations.",
                obj=model,
                id="shop_search.W010",
            )
        )
    return errors


class IndexState(models.Model):
    """
    The models whose vectors searches compare (one row for the whole site).

    It changes only when the vectors of a newly configured ``IMAGE_MODEL`` are
    complete (see :mod:`shop_search.switching`), so queries never compare
    vectors of two models and never go without results during a switch.
    """

    image_model = models.CharField(max_length=255)
    text_model = models.CharField(max_length=255)
    switched_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("search index state")

    def __str__(self) -> str:
        return f"{self.image_model} / {self.text_model}"


class PendingEmbedding(models.Model):
    """
    A product vector made by the configured ``IMAGE_MODEL`` while another model
    still serves searches; copied onto the product row when all are done.
    """

    model_label = models.CharField(max_length=200)
    object_pk = models.CharField(max_length=64)
    image_model = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=32)
    vector = models.TextField()  # pgvector text form; cast when copied
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_label", "object_pk", "image_model"],
                name="shop_search_pending_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_label}:{self.object_pk} ({self.image_model})"


class SearchDocument(models.Model):
    """
    A product's own words, for the lexical and semantic text channels: one
    row per searchable product, kept in shop_search's table (the shop's own
    table is never altered), keyed by content type and primary key.

    ``title`` is the product's name as shown (for autocomplete); ``names``
    and ``body`` hold the declared text fields folded for search
    (lower case, accents removed, every language of a translations dict);
    ``identifiers`` the declared identifiers (SKU, GTIN), upper case;
    ``tsv`` is PostgreSQL's full-text vector of both (names weigh more),
    computed by the database. ``vector`` is the text model's embedding of
    the names, in the query space, so "rotes Kleid" meets "Red dress".
    """

    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.CASCADE, related_name="+"
    )
    object_pk = models.CharField(max_length=64)
    title = models.CharField(max_length=255, blank=True, default="")
    names = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    identifiers = ArrayField(models.CharField(max_length=200), default=list)
    tsv = models.GeneratedField(
        expression=SearchVector("names", weight="A", config="simple")
        + SearchVector("body", weight="B", config="simple"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    digest = models.CharField(max_length=32, default="")
    text_model = models.CharField(max_length=255, blank=True, default="")
    vector = EmbeddingField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk"], name="shop_search_document_unique"
            )
        ]
        indexes = [
            GinIndex(fields=["tsv"], name="shop_search_document_tsv"),
            GinIndex(fields=["identifiers"], name="shop_search_document_ids"),
            EmbeddingIndex(name="shop_search_document_vec", fields=["vector"]),
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_pk}"


# --- the serving models ---------------------------------------------------------
# Which models' vectors searches compare is stored state (IndexState): read
# here, so that the status of a row can be derived without the switching
# machinery (shop_search.switching), which builds on it.


@dataclass(frozen=True)
class Serving:
    """The model pair that searches use now."""

    image_model: str
    text_model: str

    @property
    def image_encoder(self) -> Any:
        return encoder_for(self.image_model)

    @property
    def text_encoder(self) -> Any:
        return encoder_for(self.text_model)


_cache: dict[str, tuple[float, Serving]] = {}


def serving(using: str = "default", *, max_age: float = 0.0) -> Serving:
    """
    The serving models (one small query; recorded from settings on first use).

    The read path asks every time (``max_age=0``), so it follows a switch at
    once; status displays may accept a value a couple of seconds old.
    """
    now = time.monotonic()
    cached = _cache.get(using)
    if max_age and cached and now - cached[0] <= max_age:
        return cached[1]
    result = _load_serving(using)
    _cache[using] = (now, result)
    return result


def _load_serving(using: str) -> Serving:
    state = IndexState.objects.using(using).order_by("pk").first()
    if state is None:
        state, _ = IndexState.objects.using(using).get_or_create(
            pk=1,
            defaults={
                "image_model": image_model_id(),
                "text_model": shop_search_settings.TEXT_MODEL,
            },
        )
    target = image_model_id()
    if state.image_model != target and not _has_vectors(state.image_model, using):
        # Nothing was ever indexed with the recorded model (say, its download
        # failed): there is nothing to keep serving, so adopt the settings.
        IndexState.objects.using(using).filter(pk=state.pk).update(
            image_model=target, text_model=shop_search_settings.TEXT_MODEL
        )
        return Serving(target, shop_search_settings.TEXT_MODEL)
    return Serving(state.image_model, state.text_model)


def _has_vectors(image_model: str, using: str) -> bool:
    return any(
        model._base_manager.using(using)
        .filter(search_model=image_model, search_embedding__isnull=False)
        .exists()
        for model in searchable_models()
    )
