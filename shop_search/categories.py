"""
Category suggestions: zero-shot classification over the shop's own categories.

Each category is described by prompts built from its names in the shop's
languages ("a photo of a {name}", "ein Foto von {name}", ...), encoded with the
multilingual text model and averaged (prompt ensembling). An image vector (or
a text query vector) is compared with every category; a softmax at CLIP's
logit scale turns the similarities into probabilities that sum to 1.

A category model can say what its names are by defining
``search_category_names()`` returning ``{language: name}``; otherwise its
``translations`` dict (if any) and ``str(category)`` are used.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import models, transaction

from . import read_cache
from .conf import shop_search_settings
from .exceptions import ShopSearchError
from .registry import declaration
from .switching import serving
from .vectors import text_vector

__all__ = [
    "Suggestion",
    "category_model",
    "category_names",
    "classify",
    "suggest_for_product",
    "for_query",
    "apply_suggestions",
    "assign",
    "current_category_pks",
    "descendant_pks",
    "display_name",
    "in_category",
    "is_many",
]


@dataclass
class Suggestion:
    """A category and its probability for the image or query."""

    category: Any
    probability: float


def category_model(model: type[models.Model]) -> type[models.Model]:
    """The category model behind ``search_category_field`` (a ForeignKey or a
    many-to-many field)."""
    name = declaration(model).categories
    if not name:
        raise ShopSearchError(
            f"{model._meta.label} declares no categories, so categories "
            f"cannot be suggested.",
            code="no_categories",
        )
    return model._meta.get_field(name).related_model


def is_many(model: type[models.Model]) -> bool:
    """Whether a product has many categories (a many-to-many field)."""
    return model._meta.get_field(declaration(model).categories).many_to_many


def display_name(category: Any) -> str:
    """A readable name: ``str(category)``, unless that is Django's default
    "Category object (3)" and the model has a ``name`` or ``title``."""
    if type(category).__str__ is models.Model.__str__:
        for attribute in ("name", "title"):
            value = getattr(category, attribute, None)
            if isinstance(value, str) and value:
                return value
    return str(category)


def descendant_pks(category: Any) -> list[Any]:
    """
    The category and every category below it, for filters ("Clothing" finds
    dresses). Trees from django-treebeard and django-mptt (their
    ``get_descendants()``) and plain parent pointers (a ForeignKey from the
    category model to itself) are understood; a flat model gives the
    category alone.
    """
    get_descendants = getattr(category, "get_descendants", None)
    if callable(get_descendants):
        return [category.pk, *get_descendants().values_list("pk", flat=True)]
    parent = _parent_field(type(category))
    if parent is None:
        return [category.pk]
    # One query for the whole tree: shops have hundreds of categories, not
    # millions, and this works on any depth without a recursive CTE.
    children: dict[Any, list[Any]] = {}
    rows = type(category)._default_manager.values_list("pk", parent.attname)
    for pk, parent_pk in rows:
        children.setdefault(parent_pk, []).append(pk)
    found, frontier = [category.pk], [category.pk]
    seen = {category.pk}
    while frontier:
        frontier = [c for pk in frontier for c in children.get(pk, ()) if c not in seen]
        seen.update(frontier)
        found.extend(frontier)
    return found


def _parent_field(model: type[models.Model]) -> models.Field | None:
    for field in model._meta.get_fields():
        if field.many_to_one and field.related_model is model and field.concrete:
            return field
    return None


def in_category(queryset: models.QuerySet, category: Any) -> models.QuerySet:
    """``queryset`` narrowed to ``category`` (an instance or a pk) and the
    categories below it, one row per product whatever the kind of field."""
    model = queryset.model
    if not isinstance(category, models.Model):
        category = category_model(model)._default_manager.filter(pk=category).first()
        if category is None:
            return queryset.none()
    lookup = f"{declaration(model).categories}__in"
    pks = descendant_pks(category)
    if is_many(model):
        matching = model._base_manager.filter(**{lookup: pks}).values("pk")
        return queryset.filter(pk__in=matching)
    return queryset.filter(**{lookup: pks})


def current_category_pks(product: Any) -> set[Any]:
    """The pks of the categories ``product`` has now."""
    field = declaration(type(product)).categories
    if is_many(type(product)):
        return set(getattr(product, field).values_list("pk", flat=True))
    value = getattr(product, f"{field}_id", None)
    return set() if value is None else {value}


def assign(product: Any, category: Any) -> str:
    """
    Give ``product`` the ``category``: a ForeignKey is replaced ("set"), a
    many-to-many field gains it and keeps the others ("added").
    """
    field = declaration(type(product)).categories
    if is_many(type(product)):
        getattr(product, field).add(category)
        return "added"
    setattr(product, field, category)
    product.save(update_fields=[field])
    return "set"


def category_names(category: Any) -> dict[str, str]:
    """``{language: name}`` for a category (see the module docstring)."""
    custom = getattr(category, "search_category_names", None)
    if callable(custom):
        return dict(custom())
    names = {"en": display_name(category)}
    translations = getattr(category, "translations", None)
    if isinstance(translations, dict):
        names.update(
            {k: v for k, v in translations.items() if isinstance(v, str) and v}
        )
    return names


def _prompts(names: dict[str, str]) -> list[str]:
    templates = shop_search_settings.CATEGORY_PROMPTS
    english = templates.get("en", "{}")
    return [templates.get(lang, english).format(name) for lang, name in names.items()]


_cache: dict[str, np.ndarray] = {}
_cache_lock = threading.Lock()


def category_matrix(categories: list[Any], encoder: Any = None) -> np.ndarray:
    """One normalized prompt-ensemble vector per category, cached per model."""
    encoder = encoder or serving().text_encoder
    described = [
        (category.pk, sorted(category_names(category).items()))
        for category in categories
    ]
    key = hashlib.sha1(
        repr(
            (encoder.model_id, shop_search_settings.CATEGORY_PROMPTS, described)
        ).encode()
    ).hexdigest()
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    prompts, owners = [], []
    for index, category in enumerate(categories):
        for prompt in _prompts(category_names(category)):
            prompts.append(prompt)
            owners.append(index)
    vectors = encoder.encode_texts(prompts)
    matrix = np.zeros((len(categories), vectors.shape[1]), dtype=np.float32)
    np.add.at(matrix, np.asarray(owners), vectors)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)
    with _cache_lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = matrix
    return matrix


def classify(
    vector: np.ndarray, categories: list[Any], encoder: Any = None
) -> list[Suggestion]:
    """
    All ``categories`` with their probabilities for ``vector`` (a vector of the
    serving models' space), most likely first.
    """
    if not categories:
        return []
    return _ranked(vector, categories, category_matrix(categories, encoder))


def _ranked(
    vector: np.ndarray, categories: list[Any], matrix: np.ndarray
) -> list[Suggestion]:
    logits = matrix @ vector * shop_search_settings.CATEGORY_LOGIT_SCALE
    logits = logits - logits.max()
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)
    return [Suggestion(categories[i], float(probabilities[i])) for i in order]


def for_query(
    model: type[models.Model], query: str, *, top: int, current: Any = None
) -> list[Suggestion]:
    """The ``top`` categories a (normalised) text query most likely means.
    For the request path: the categories and their vectors come from a
    per-process cache (see :mod:`shop_search.read_cache`)."""
    if not declaration(model).categories:
        return []
    current = current or read_cache.serving()
    encoder = current.text_encoder
    vector = text_vector(query, encoder)
    categories, matrix = _categories_and_matrix(model, encoder)
    if not categories:
        return []
    return _ranked(vector, categories, matrix)[:top]


#: How long a process may suggest categories as it read them: a category
#: changed in another process shows within that time (in this one, at once).
CATEGORY_SECONDS = 60.0
_per_model = read_cache.ReadCache(CATEGORY_SECONDS, size=64)


def _categories_and_matrix(
    model: type[models.Model], encoder: Any
) -> tuple[list[Any], np.ndarray | None]:
    """``all_categories(model)`` and their matrix, without a query or a hash
    of every name per request (see :mod:`shop_search.read_cache`)."""
    related = category_model(model)
    _per_model.clear_on_change(related)
    using = related._default_manager.db

    def read() -> tuple[list[Any], np.ndarray | None]:
        categories = all_categories(model)
        matrix = category_matrix(categories, encoder) if categories else None
        return categories, matrix

    key = (
        model._meta.label,
        using,
        encoder.model_id,
        repr(shop_search_settings.CATEGORY_PROMPTS),
    )
    return _per_model.get(key, read, using)


def all_categories(model: type[models.Model]) -> list[Any]:
    return list(category_model(model)._default_manager.order_by("pk"))


def suggest_for_product(product: Any) -> list[Suggestion]:
    """Suggestions for a product from its first image's stored vector ([] if
    not indexed)."""
    from .ranking import stored_vector

    vector = stored_vector(product)
    if vector is None:
        return []
    return classify(vector, all_categories(type(product)))


def apply_suggestions(
    queryset: models.QuerySet, *, threshold: float
) -> list[tuple[Any, Any, Any, float]]:
    """
    Give each product its top suggestion when that suggestion's probability
    is at least ``threshold`` and the product does not have it yet: a
    ForeignKey category is replaced, a many-to-many one is added (the
    product keeps its other categories). Returns ``(product, old, new,
    probability)`` for each change; ``old`` is the replaced category, or
    None when the category was added.
    """
    model = queryset.model
    from .ranking import stored_vector

    field = declaration(model).categories
    many = is_many(model)
    categories = all_categories(model)
    changes = []
    with transaction.atomic(using=queryset.db):
        related = (
            queryset.prefetch_related(field) if many else queryset.select_related(field)
        )
        for product in related:
            vector = stored_vector(product)
            if vector is None:
                continue
            suggestions = classify(vector, categories)
            if not suggestions:
                continue
            best = suggestions[0]
            if best.probability < threshold:
                continue
            if many:
                if best.category in getattr(product, field).all():
                    continue
                old = None
            else:
                old = getattr(product, field)
                if best.category == old:
                    continue
            assign(product, best.category)
            changes.append((product, old, best.category, best.probability))
    return changes
