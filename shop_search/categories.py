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

from .conf import shop_search_settings
from .exceptions import ShopSearchError
from .models import SearchableProduct
from .switching import serving

__all__ = [
    "Suggestion",
    "category_model",
    "category_names",
    "classify",
    "suggest_for_product",
    "for_query",
    "apply_suggestions",
]


@dataclass
class Suggestion:
    """A category and its probability for the image or query."""

    category: Any
    probability: float


def category_model(model: type[SearchableProduct]) -> type[models.Model]:
    """The category model behind ``search_category_field`` (a ForeignKey)."""
    name = model.search_category_field
    if not name:
        raise ShopSearchError(
            f"{model._meta.label} has no search_category_field, so categories "
            f"cannot be suggested.",
            code="no_categories",
        )
    return model._meta.get_field(name).related_model


def category_names(category: Any) -> dict[str, str]:
    """``{language: name}`` for a category (see the module docstring)."""
    custom = getattr(category, "search_category_names", None)
    if callable(custom):
        return dict(custom())
    names = {"en": str(category)}
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
    matrix = category_matrix(categories, encoder)
    logits = matrix @ vector * shop_search_settings.CATEGORY_LOGIT_SCALE
    logits = logits - logits.max()
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)
    return [Suggestion(categories[i], float(probabilities[i])) for i in order]


def for_query(
    model: type[SearchableProduct], query: str, *, top: int, current: Any = None
) -> list[Suggestion]:
    """The ``top`` categories a (normalised) text query most likely means."""
    from .search import text_vector

    if not model.search_category_field:
        return []
    current = current or serving()
    vector = text_vector(query, current.text_encoder)
    return classify(vector, all_categories(model), current.text_encoder)[:top]


def all_categories(model: type[SearchableProduct]) -> list[Any]:
    return list(category_model(model)._default_manager.order_by("pk"))


def suggest_for_product(product: SearchableProduct) -> list[Suggestion]:
    """Suggestions for a product from its stored vector ([] if not indexed)."""
    if product.search_embedding is None:
        return []
    if product.search_model != serving().image_model:
        return []
    return classify(product.search_embedding, all_categories(type(product)))


def apply_suggestions(
    queryset: models.QuerySet, *, threshold: float
) -> list[tuple[Any, Any, Any, float]]:
    """
    Set each product's category to its top suggestion when that suggestion's
    probability is at least ``threshold`` and differs from the current one.
    Returns ``(product, old, new, probability)`` for each change.
    """
    model = queryset.model
    field = model.search_category_field
    categories = all_categories(model)
    changes = []
    with transaction.atomic(using=queryset.db):
        current = queryset.filter(
            search_embedding__isnull=False, search_model=serving().image_model
        )
        for product in current.select_related(field):
            suggestions = classify(product.search_embedding, categories)
            if not suggestions:
                continue
            best = suggestions[0]
            old = getattr(product, field)
            if best.probability >= threshold and best.category != old:
                setattr(product, field, best.category)
                product.save(update_fields=[field])
                changes.append((product, old, best.category, best.probability))
    return changes
