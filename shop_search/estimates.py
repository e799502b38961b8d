"""
How much a ranking asks for, from PostgreSQL's estimates and without
reading rows: the SQL of a queryset's candidates, how many rows it likely
matches, whether to rank them exactly or through the HNSW index, and how
many nearest image vectors to take for a number of products. Each estimate
is kept per process for a minute: it only steers the plan, and a catalog
grows slowly.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import connections, models

from . import read_cache
from .conf import shop_search_settings
from .models import ImageVector

__all__ = [
    "for_one_search",
    "candidate_sql",
    "estimated_rows",
    "ranks_exactly",
    "vector_depth",
    "channel_vector_depth",
    "ESTIMATE_SECONDS",
]


#: How long a process reuses PostgreSQL's row estimate for the same SQL: the
#: estimate only picks an exact scan or the index, and a catalog grows slowly.
ESTIMATE_SECONDS = 60.0
_estimates = read_cache.ReadCache(ESTIMATE_SECONDS, size=512)


_KEPT = "_shop_search_candidates"


def for_one_search(queryset: models.QuerySet) -> models.QuerySet:
    """
    A copy of ``queryset`` for one search, on which :func:`candidate_sql`
    keeps the SQL it builds: a search builds several statements from one
    queryset, and Django's compiler costs a tenth of a millisecond a time.
    The caller's queryset keeps nothing: it may outlive the request (a
    module-level ``VISIBLE_PRODUCTS`` queryset), and the same query can
    compile to other SQL in another request (its time zone, say).
    """
    copy = queryset.all()
    copy.__dict__[_KEPT] = None
    return copy


def candidate_sql(queryset: models.QuerySet) -> tuple[str, list[Any]]:
    """
    SQL selecting the primary keys of ``queryset``'s rows, unordered, with
    its parameters: the candidates that the ranking statements join. Built
    once on a queryset from :func:`for_one_search`, each time on another.
    """
    built = queryset.__dict__.get(_KEPT)
    if built is None:
        compiler = (
            queryset.order_by().values("pk").query.get_compiler(using=queryset.db)
        )
        sql, params = compiler.as_sql()
        built = (sql, tuple(params))
        if _KEPT in queryset.__dict__:
            queryset.__dict__[_KEPT] = built
    return built[0], list(built[1])


def estimated_rows(queryset: models.QuerySet) -> int:
    """
    PostgreSQL's estimate of the rows ``queryset`` matches: planning only, no
    rows read, at any catalog size. It is close for filters on columns with
    statistics (``ANALYZE``, which autovacuum runs); index the columns your
    filters use. Kept per process for ``ESTIMATE_SECONDS`` per SQL and
    parameters, so a request seldom pays the EXPLAIN's round trip.
    """
    using = queryset.db
    sql, params = candidate_sql(queryset)

    def explain() -> int:
        with connections[using].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    return _estimates.get((using, sql, repr(params)), explain, using)


def ranks_exactly(queryset: models.QuerySet, image_model: str) -> bool:
    """
    Whether to rank ``queryset``'s products by an exact scan of their image
    vectors rather than through the HNSW index: when PostgreSQL estimates
    their vectors (the products it expects ``queryset`` to match, times the
    catalog's vectors per product) at ``EXACT_SCAN_THRESHOLD`` or fewer.
    The exact scan reads every candidate's vectors by key, so its cost
    follows the number of vectors, not of products.
    """
    threshold = int(shop_search_settings.EXACT_SCAN_THRESHOLD)
    if not threshold:
        return False
    products = estimated_rows(queryset)
    if products > threshold:  # counted as one vector at least: no more to ask
        return False
    per_product = _vectors_per_product(queryset, image_model)
    return products * per_product <= threshold


def vector_depth(queryset: models.QuerySet, image_model: str, families: int) -> int:
    """How many nearest vectors to take for ``families`` products: the
    catalog's images per product times as many (a family's best image wins
    and its other images mostly lie near it)."""
    return math.ceil(families * _vectors_per_product(queryset, image_model))


_ratios = read_cache.ReadCache(ESTIMATE_SECONDS, size=64)


def _vectors_per_product(queryset: models.QuerySet, image_model: str) -> float:
    """The catalog's image vectors of ``image_model`` per product of
    ``queryset``'s model (at least 1), from PostgreSQL's estimates; kept
    per process like them, without building their SQL on every search."""
    using, model = queryset.db, queryset.model

    def estimate() -> float:
        content_type = ContentType.objects.db_manager(using).get_for_model(
            model, for_concrete_model=False
        )
        vectors = estimated_rows(
            ImageVector.objects.using(using).filter(
                content_type=content_type, image_model=image_model
            )
        )
        products = estimated_rows(model._base_manager.using(using).all())
        return max(1.0, vectors / max(1, products))

    return _ratios.get((using, model._meta.label, image_model), estimate, using)


def channel_vector_depth(
    queryset: models.QuerySet, image_model: str, families: int
) -> int:
    """
    How many nearest vectors the text search's image channel takes for
    ``families`` products: the first image of each, and half the others.
    A text query lies about as far from every photo of a product, so a
    family's other photos seldom crowd the nearest vectors the way they do
    around a photo query (``bench/storage.py``'s 3-image catalog: the 200
    vectors nearest to each of 60 text queries held 101 to 139 families,
    unfiltered and 10%-filtered). Through the HNSW index under a filter the
    channel's cost follows this depth; a channel may come up short, which
    only takes its weakest ranks out of the fusion.
    """
    per_product = _vectors_per_product(queryset, image_model)
    return math.ceil(families * (1 + (per_product - 1) / 2))
