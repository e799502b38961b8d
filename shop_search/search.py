"""
The read door: every search goes through this module. Each function takes a
base queryset (the shop's visibility and filters) and returns a
:class:`~shop_search.ranking.Page` of hits, best first.

- :func:`search_text` fuses the channels over the product's own words
  (:mod:`shop_search.lexical`) with the image channel;
- :func:`search_image`, :func:`similar_products` and :func:`shop_the_look`
  (:mod:`shop_search.look`) rank by image vectors (:mod:`shop_search.ranking`);
- :func:`text_search` is what the API and the page answer a text query with.

Only vectors made by the serving models are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from . import calibration, fusion, lexical, result_cache
from .conf import import_from_setting, shop_search_settings
from .estimates import estimated_rows, for_one_search
from .look import Look, LookItem, shop_the_look
from .ranking import (
    Hit,
    Page,
    check_limit,
    image_channel_sql,
    nearest,
    stored_vector,
)
from .registry import declaration, is_searchable, searchable_models
from .switching import serving
from .vectors import (
    VISIBLE_PATTERN,
    QueryError,
    encoder_gate,
    image_vector,
    normalize_query,
    query_cache,
    text_vector,
)

__all__ = [
    "Hit",
    "Page",
    "QueryError",
    "VISIBLE_PATTERN",
    "product_model",
    "visible_products",
    "normalize_query",
    "query_cache",
    "encoder_gate",
    "text_vector",
    "image_vector",
    "nearest",
    "estimated_rows",
    "search_text",
    "text_search",
    "suggest",
    "Suggestions",
    "search_image",
    "similar_products",
    "shop_the_look",
    "Look",
    "LookItem",
]


def product_model() -> type[models.Model]:
    """The model searched by the API and the page (``PRODUCT_MODEL``, or the
    one searchable model)."""
    label = shop_search_settings.PRODUCT_MODEL
    if label:
        model = apps.get_model(label)
        if not is_searchable(model):
            raise ImproperlyConfigured(
                f"SHOP_SEARCH['PRODUCT_MODEL'] = {label!r} is not searchable: "
                f"register it (shop_search.register({label!r}, images=[...])) or "
                f"inherit shop_search.models.SearchableProduct."
            )
        return model
    models_ = searchable_models()
    if len(models_) != 1:
        names = ", ".join(m._meta.label for m in models_) or "none"
        raise ImproperlyConfigured(
            f"Set SHOP_SEARCH['PRODUCT_MODEL'] to the model to search "
            f"(searchable models: {names})."
        )
    return models_[0]


def visible_products(request: Any = None) -> models.QuerySet:
    """
    The products shoppers may find: the ``VISIBLE_PRODUCTS`` setting's
    ``f(request)``, else the declaration's ``queryset(request)``, else all
    products of
    :func:`product_model`. Every read starts from this queryset, so one
    declaration hides a product from every search, ``similar`` and the page.
    With ``READ_DATABASE``, it reads from that database (a replica).
    """
    model = product_model()
    source = declaration(model).queryset
    if shop_search_settings.VISIBLE_PRODUCTS:  # the site's settings win
        source = import_from_setting("VISIBLE_PRODUCTS")
    if source is None:
        queryset = model._default_manager.all()
    else:
        queryset = source(request)
    if isinstance(queryset, models.Manager):
        queryset = queryset.all()
    if shop_search_settings.READ_DATABASE:
        # Every read below follows queryset.db: the ranking, the words, the
        # serving models (a replica has replayed them like the rest).
        queryset = queryset.using(shop_search_settings.READ_DATABASE)
    if getattr(queryset, "model", None) is not model:
        raise ImproperlyConfigured(
            f"The visible products of {model._meta.label} (register(queryset=...) "
            f"or SHOP_SEARCH['VISIBLE_PRODUCTS']) must be a queryset of "
            f"{model._meta.label}, not {queryset!r}."
        )
    return queryset


# --- the searches -----------------------------------------------------------------


def search_text(
    queryset: models.QuerySet,
    query: str,
    *,
    current: Any = None,
    limit: int | None = None,
    offset: int = 0,
    sort: str = "relevance",
    facets: bool = False,
) -> Page:
    """
    Products for a text query in any supported language: the channels over
    the product's own words (its SKU, its name as typed or misspelt, its
    translations, the meaning of its names) fused with its image by
    reciprocal rank fusion (``CHANNEL_WEIGHTS``, ``RRF_K``).

    Each hit says which channels ``matched``. ``page.extra`` holds ``count``
    (matching products, ``count_exact`` False past ``COUNT_CAP``),
    ``no_match`` (nothing matched better than nonsense does), ``words`` and
    ``corrected`` (for highlighting), and with ``facets`` the matching
    products per category. ``sort``: ``"relevance"`` or a key of ``SORTS``.
    ``current`` (a :class:`~shop_search.switching.Serving`) saves a lookup.
    """
    current = current or serving(queryset.db)
    queryset = for_one_search(queryset)
    query = normalize_query(query)
    limit = check_limit(limit, offset)
    sorts = shop_search_settings.SORTS
    if sort != "relevance" and sort not in sorts:
        raise QueryError(
            f"sort must be one of: relevance, {', '.join(sorts)}.",
            code="invalid_sort",
        )
    cap = int(shop_search_settings.COUNT_CAP)
    if offset >= cap:
        # Every channel would rank offset + limit products for a page no
        # shopper reads; the count stops there too.
        raise QueryError(
            f"Text search results end at {cap} (COUNT_CAP): offset must be "
            f"below {cap}. Narrow the search with filters instead.",
            code="offset_too_deep",
        )
    vector = text_vector(query, current.text_encoder)
    cache_key = result_cache.ranking_key(
        queryset,
        vector,
        query=query,
        limit=limit,
        offset=offset,
        sort=sort,
        facets=facets,
        models=(current.image_model, current.text_model),
    )
    cached = result_cache.get(cache_key)
    if cached is not None:
        return _cached_text_page(queryset, cached, limit=limit, offset=offset)
    page = _search_text(queryset, query, vector, current, limit, offset, sort, facets)
    result_cache.put(
        cache_key,
        (
            [(hit.object.pk, hit.score, hit.matched) for hit in page],
            page.has_more,
            page.extra,
        ),
    )
    return page


def text_search(
    queryset: models.QuerySet, query: str, *, categories: int = 3, **options: Any
) -> Page:
    """
    What a shopper's text search answers, for the API and the page alike:
    :func:`search_text` (``options``: limit, offset, sort, facets) and in
    ``page.extra["categories"]`` the ``categories`` categories the query
    most likely means (:class:`~shop_search.categories.Suggestion`).
    """
    from .categories import for_query
    from .read_cache import serving as cached_serving

    # The serving models change only on a promotion: read them from the
    # per-process cache (shop_search.read_cache), not once per request.
    current = cached_serving(queryset.db)
    query = normalize_query(query)
    page = search_text(queryset, query, current=current, **options)
    page.extra["query"] = query
    page.extra["categories"] = (
        for_query(queryset.model, query, top=categories, current=current)
        if categories
        else []
    )
    return page


def _cached_text_page(
    queryset: models.QuerySet, cached: Any, *, limit: int, offset: int
) -> Page:
    """A cached text ranking, its products read through ``queryset`` again."""
    ranked, has_more, extra = cached
    rows = queryset.in_bulk([pk for pk, _score, _matched in ranked])
    hits = [
        Hit(rows[pk], score, matched) for pk, score, matched in ranked if pk in rows
    ]
    return Page(hits=hits, limit=limit, offset=offset, has_more=has_more, extra=extra)


def _search_text(
    queryset: models.QuerySet,
    query: str,
    vector: np.ndarray,
    current: Any,
    limit: int,
    offset: int,
    sort: str,
    facets: bool,
) -> Page:
    sorts = shop_search_settings.SORTS
    depth = fusion.depth_for(offset + limit + 1)
    if sort != "relevance":
        depth = max(depth, int(shop_search_settings.COUNT_CAP))
    # Every channel, the image one included, in one statement.
    channels = lexical.rank(
        queryset,
        query,
        vector,
        text_model=current.text_model,
        depth=depth,
        image=image_channel_sql(
            queryset, vector, depth=depth, image_model=current.image_model
        ),
    )
    floors = calibration.noise_floors(queryset.model, current, queryset.db)
    fused = fusion.by_family(queryset.model, fusion.fuse(channels, floors))
    matching = [key for key, (_s, matched) in fused.items() if matched]
    extra: dict[str, Any] = {
        "words": channels.words,
        "corrected": channels.corrected,
        "no_match": not matching and bool(shop_search_settings.NO_MATCH),
        **fusion.count(channels, matching, depth),
    }
    if facets:
        extra["facets"] = fusion.facets(queryset, matching)
    if extra["no_match"]:
        return Page(hits=[], limit=limit, offset=offset, has_more=False, extra=extra)
    if sort != "relevance":
        rows = list(
            queryset.filter(pk__in=fusion.pks(queryset.model, matching)).order_by(
                *sorts[sort]
            )[offset : offset + limit + 1]
        )
        hits = [Hit(row, *fused[str(row.pk)]) for row in rows]
    else:
        order = list(fused)  # best first
        window = order[offset : offset + limit + 1]
        fetched = queryset.in_bulk(fusion.pks(queryset.model, window))
        objects = {str(pk): obj for pk, obj in fetched.items()}
        hits = [Hit(objects[key], *fused[key]) for key in window if key in objects]
    return Page(
        hits=hits[:limit],
        limit=limit,
        offset=offset,
        # Results end at COUNT_CAP (a page from there is refused): no next
        # page points past it.
        has_more=len(hits) > limit
        and offset + limit < int(shop_search_settings.COUNT_CAP),
        extra=extra,
    )


@dataclass
class Suggestions:
    """Autocomplete: product names and categories for a typed prefix."""

    titles: list[str]
    categories: list[Any]


def suggest(queryset: models.QuerySet, prefix: str, *, limit: int = 8) -> Suggestions:
    """
    What to offer while a shopper types ``prefix``: the names of products
    having every typed word, the last one as a prefix ("Black che" ->
    "Black checked T-shirt"), misspelt words corrected; and the categories
    whose name (in any of its languages) has words starting so.
    """
    from .categories import all_categories, category_names
    from .documents import fold, tokens

    titles = lexical.suggest_titles(queryset, prefix, limit=limit)
    words = tokens(prefix)
    found = []
    if words and declaration(queryset.model).categories:
        for category in all_categories(queryset.model):
            names = [tokens(fold(name)) for name in category_names(category).values()]
            if any(
                all(any(w.startswith(word) for w in name) for word in words)
                for name in names
            ):
                found.append(category)
    return Suggestions(titles=titles, categories=found[:limit])


def search_image(queryset: models.QuerySet, image: Any, **options: Any) -> Page:
    """Products whose images look like an uploaded photo."""
    current = serving(queryset.db)
    vector = image_vector(image, current.image_encoder)
    return nearest(queryset, vector, image_model=current.image_model, **options)


def similar_products(queryset: models.QuerySet, product: Any, **options: Any) -> Page:
    """
    Products that look like ``product`` (its stored vector; nothing is
    re-encoded), without the product itself. An unindexed product has none.
    """
    current = serving(queryset.db)
    vector = stored_vector(product, current.image_model)
    if vector is None:
        limit = check_limit(options.get("limit"), options.get("offset", 0))
        return Page(
            hits=[], limit=limit, offset=options.get("offset", 0), has_more=False
        )
    # Not the product, nor its variants (a family is one product to a shopper).
    group = declaration(type(product)).group_key(product)
    return nearest(
        queryset.exclude(pk=product.pk),
        vector,
        image_model=current.image_model,
        exclude_group=group,
        **options,
    )
