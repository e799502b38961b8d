"""
shop_search's own tables, and the base class for a product model the shop owns.

A shop makes a model searchable either with :func:`shop_search.register`
(any model, no change to it) or by inheriting :class:`SearchableProduct`
and declaring fields as class attributes::

    from shop_search.models import SearchableProduct

    class Product(SearchableProduct):
        name = models.CharField(max_length=200)
        image = models.ImageField(upload_to="products/")
        category = models.ForeignKey(Category, on_delete=models.PROTECT)

        search_image_field = "image"
        search_text_fields = ["name", "description"]
        search_category_field = "category"

Either way the vectors and words live in shop_search's tables
(:class:`ImageVector`, :class:`IndexEntry`, :class:`SearchDocument`), keyed by
content type and primary key; the shop's table gets no column.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.utils.translation import gettext_lazy as _

from .conf import shop_search_settings
from .encoders import encoder_for, image_model_id
from .fields import EmbeddingField, EmbeddingIndex
from .registry import image_fingerprint, searchable_models

__all__ = [
    "SearchableProduct",
    "IndexStatus",
    "IndexEntry",
    "ImageVector",
    "searchable_models",
    "image_fingerprint",
    "SearchDocument",
    "Serving",
    "serving",
]


class IndexStatus(models.TextChoices):
    """
    Where a product stands in the index, for the models that serve searches
    (see :mod:`shop_search.switching`). Derived, never stored: see
    :mod:`shop_search.status`.
    """

    INDEXED = "indexed", _("Indexed")
    MISSING = "missing", _("Not indexed yet")
    STALE = "stale", _("Stale")
    FAILED = "failed", _("Failed, will retry")
    GIVEN_UP = "given_up", _("Failed, set aside")
    NO_IMAGE = "no_image", _("No image")


class SearchableProduct(models.Model):
    """
    Abstract base for a product model the shop owns: the same declaration as
    :func:`shop_search.register`, as class attributes. It adds no column.

    ``search_image_field`` (an ImageField), or ``search_images`` (paths, as
    ``register(images=...)``, galleries included); ``search_text_fields``,
    ``search_name_fields``, ``search_identifier_fields``,
    ``search_category_field``, ``search_parent_field`` (variants),
    ``search_queryset`` (visibility).
    """

    search_image_field: ClassVar[str | None] = "image"
    search_images: ClassVar[list[str] | None] = None
    search_text_fields: ClassVar[list[str]] = []
    #: The fields holding the product's name(s), translations included
    #: (autocomplete, and the heaviest words); default: the first text field.
    search_name_fields: ClassVar[list[str] | None] = None
    #: Codes a shopper may type to find exactly this product (SKU, GTIN).
    search_identifier_fields: ClassVar[list[str]] = []
    search_category_field: ClassVar[str | None] = None
    search_parent_field: ClassVar[str | None] = None
    #: What shoppers may find: a dotted path to ``f(request) -> QuerySet``.
    search_queryset: ClassVar[str | None] = None
    _shop_search_base: ClassVar[bool] = True

    class Meta:
        abstract = True

    @classmethod
    def check(cls, **kwargs: Any) -> list[Any]:
        errors = super().check(**kwargs)
        if not cls._meta.abstract:
            from .checks import check_declaration
            from .registry import declaration

            errors.extend(check_declaration(declaration(cls)))
        return errors


class IndexEntry(models.Model):
    """
    A product's bookkeeping for one image model: which images its vectors
    were made from (``digest``: MD5 of the image names in order) and the
    last failure. A product with no entry for the serving model is missing;
    one whose images changed since is stale.
    """

    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.CASCADE, related_name="+"
    )
    object_pk = models.CharField(max_length=64)
    image_model = models.CharField(max_length=255)
    digest = models.CharField(max_length=32)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    indexed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("index entry")
        verbose_name_plural = _("index entries")
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk", "image_model"],
                name="shop_search_entry_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_pk} ({self.image_model})"


class ImageVector(models.Model):
    """
    One image of one product, embedded by one image model. ``source`` names
    the image (the field, or ``"<gallery path>:<gallery pk>"``);
    ``group_pk`` is the family (the parent's key for a variant), so that
    searches return a family once.
    """

    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.CASCADE, related_name="+"
    )
    object_pk = models.CharField(max_length=64)
    group_pk = models.CharField(max_length=64)
    image_model = models.CharField(max_length=255)
    source = models.CharField(max_length=255)
    position = models.PositiveIntegerField(default=0)
    fingerprint = models.CharField(max_length=32)
    vector = EmbeddingField(editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk", "image_model", "source"],
                name="shop_search_vector_unique",
            )
        ]
        indexes = [
            EmbeddingIndex(name="shop_search_vector_hnsw", fields=["vector"]),
            models.Index(
                fields=["image_model", "fingerprint"], name="shop_search_vector_fp"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_pk} {self.source}"


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
    from django.db import router

    state = IndexState.objects.using(using).order_by("pk").first()
    # Recording is a write: on the primary, also when reading from a replica.
    primary = router.db_for_write(IndexState)
    if state is None and using != primary:
        state = IndexState.objects.using(primary).order_by("pk").first()
    if state is None:
        using = primary
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
        IndexState.objects.using(primary).filter(pk=state.pk).update(
            image_model=target, text_model=shop_search_settings.TEXT_MODEL
        )
        return Serving(target, shop_search_settings.TEXT_MODEL)
    return Serving(state.image_model, state.text_model)


def _has_vectors(image_model: str, using: str) -> bool:
    return ImageVector.objects.using(using).filter(image_model=image_model).exists()
