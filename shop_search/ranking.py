"""
Ranking products by vector: nearest neighbours through the HNSW index or an
exact scan, full pages under filters, and the short-lived ranking cache.
Every function takes the candidate queryset (visibility and filters applied)
and returns a :class:`Page` of :class:`Hit`, best first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import connections, models, transaction
from django.db.models import ExpressionWrapper, FloatField
from django.db.models.functions import Cast
from pgvector.django import MaxInnerProduct

from . import read_cache, result_cache
from .conf import shop_search_settings
from .switching import serving
from .vectors import QueryError

__all__ = [
    "Hit",
    "Page",
    "nearest",
    "rank_nearest",
    "estimated_rows",
    "check_limit",
    "hnsw_cursor",
    "image_channel_sql",
]


@dataclass
class Hit:
    """
    One result: the product, its score (cosine similarity for image
    searches; the fused score for text searches) and the channels that
    found it (``"name"``, ``"identifier"``, ``"image"``...).
    """

    object: Any
    score: float
    matched: list[str] = field(default_factory=list)


@dataclass
class Page:
    """A page of results. ``has_more``: a next page exists at ``offset + limit``."""

    hits: list[Hit]
    limit: int
    offset: int
    has_more: bool
    exact: bool = False  # the page was filled by an exact scan
    extra: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


def nearest(
    queryset: models.QuerySet,
    vector: np.ndarray,
    *,
    limit: int | None = None,
    offset: int = 0,
    min_score: float | None = None,
    image_model: str | None = None,
) -> Page:
    """
    The products of ``queryset`` nearest to ``vector``, best first.

    ``vector`` must come from the serving models' space; only rows whose
    vector was made by ``image_model`` (default: the serving image model)
    are compared. ``min_score`` (default ``MIN_SCORE``) drops weaker results.
    """
    limit = check_limit(limit, offset)
    return rank_nearest(
        queryset,
        vector,
        limit=limit,
        offset=offset,
        min_score=min_score,
        image_model=image_model,
    )


def rank_nearest(
    queryset: models.QuerySet,
    vector: np.ndarray,
    *,
    limit: int,
    offset: int = 0,
    min_score: float | None = None,
    image_model: str | None = None,
) -> Page:
    """:func:`nearest` without the ``MAX_LIMIT`` check, for internal
    rankings (the noise floors, the evaluation report)."""
    if queryset.query.is_empty():  # e.g. a filter on a category that is gone
        return Page(hits=[], limit=limit, offset=offset, has_more=False)
    if min_score is None:
        min_score = shop_search_settings.MIN_SCORE
    model = queryset.model
    embedding = model._meta.get_field("search_embedding")
    query = Cast(
        models.Value(embedding.get_prep_value(vector)), output_field=embedding.clone()
    )
    candidates = queryset.filter(
        search_embedding__isnull=False,
        search_model=image_model or serving(queryset.db).image_model,
    ).defer("search_embedding")  # 512 numbers a row that results do not show
    cache_key = result_cache.ranking_key(
        candidates, vector, limit=limit, offset=offset, min_score=min_score
    )
    cached = result_cache.get(cache_key)
    if cached is not None:
        return _cached_page(candidates, cached, limit=limit, offset=offset)
    distance = MaxInnerProduct("search_embedding", query)
    window = slice(offset, offset + limit + 1)
    # Ordering by an expression the index cannot serve makes PostgreSQL scan
    # the (filtered) rows exactly.
    exact_distance = ExpressionWrapper(distance * 1.0, output_field=FloatField())
    exact_order = candidates.annotate(_distance=exact_distance).order_by("_distance")
    threshold = int(shop_search_settings.EXACT_SCAN_THRESHOLD)
    if threshold and estimated_rows(candidates) <= threshold:
        # Few candidates (a selective filter, a small shop): an exact scan
        # finds the true nearest, where a filtered HNSW scan can miss some (it
        # follows the graph of all products).
        rows = list(exact_order[window])
        exact = True
    else:
        # ORDER BY "embedding <#> query" is what the HNSW index serves.
        indexed = candidates.annotate(_distance=distance).order_by("_distance")
        rows = _run(indexed[window], queryset.db)
        exact = False
        if len(rows) <= limit and candidates.count() > offset + len(rows):
            # The iterative scan stopped before the page was full.
            rows = list(exact_order[window])
            exact = True
    has_more = len(rows) > limit
    # halfvec rounding can put a perfect match a hair above 1.
    hits = [
        Hit(row, min(1.0, -float(row._distance)), ["image"]) for row in rows[:limit]
    ]
    if min_score is not None:
        kept = [hit for hit in hits if hit.score >= min_score]
        has_more = has_more and len(kept) == len(hits)
        hits = kept
    result_cache.put(
        cache_key,
        ([hit.object.pk for hit in hits], [hit.score for hit in hits], has_more, exact),
    )
    return Page(hits=hits, limit=limit, offset=offset, has_more=has_more, exact=exact)


def image_channel_sql(
    queryset: models.QuerySet, vector: np.ndarray, *, depth: int, image_model: str
) -> tuple[str, list[Any]] | None:
    """
    SQL selecting ``(pk, distance)`` of the ``depth`` products nearest to
    ``vector``, to run inside another statement (the text search's channels):
    an exact scan for few candidates, else the HNSW index, as in
    :func:`rank_nearest` (without its refill: a channel may come up short).
    None for a queryset that is empty by construction.
    """
    if queryset.query.is_empty():
        return None
    embedding = queryset.model._meta.get_field("search_embedding")
    query = Cast(
        models.Value(embedding.get_prep_value(vector)), output_field=embedding.clone()
    )
    candidates = queryset.filter(
        search_embedding__isnull=False, search_model=image_model
    )
    distance = MaxInnerProduct("search_embedding", query)
    threshold = int(shop_search_settings.EXACT_SCAN_THRESHOLD)
    if threshold and estimated_rows(candidates) <= threshold:
        distance = ExpressionWrapper(distance * 1.0, output_field=FloatField())
    ranked = (
        candidates.annotate(_distance=distance)
        .order_by("_distance")
        .values_list("pk", "_distance")[:depth]
    )
    sql, params = ranked.query.get_compiler(using=queryset.db).as_sql()
    return sql, list(params)


def _cached_page(
    candidates: models.QuerySet, cached: Any, *, limit: int, offset: int
) -> Page:
    """A page from a cached ranking, its products read through ``candidates``
    again (a product deleted or hidden since drops out)."""
    pks, scores, has_more, exact = cached
    rows = candidates.in_bulk(pks)
    hits = [
        Hit(rows[pk], score, ["image"])
        for pk, score in zip(pks, scores, strict=True)
        if pk in rows
    ]
    return Page(hits=hits, limit=limit, offset=offset, has_more=has_more, exact=exact)


#: How long a process reuses PostgreSQL's row estimate for the same SQL: the
#: estimate only picks an exact scan or the index, and a catalog grows slowly.
ESTIMATE_SECONDS = 60.0
_estimates = read_cache.ReadCache(ESTIMATE_SECONDS, size=512)


def estimated_rows(queryset: models.QuerySet) -> int:
    """
    PostgreSQL's estimate of the rows ``queryset`` matches: planning only, no
    rows read, at any catalog size. It is close for filters on columns with
    statistics (``ANALYZE``, which autovacuum runs); index the columns your
    filters use. Kept per process for ``ESTIMATE_SECONDS`` per SQL and
    parameters, so a request seldom pays the EXPLAIN's round trip.
    """
    using = queryset.db
    sql, params = (
        queryset.order_by().values("pk").query.get_compiler(using=using).as_sql()
    )

    def explain() -> int:
        with connections[using].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    return _estimates.get((using, sql, repr(params)), explain, using)


@contextmanager
def hnsw_cursor(using: str) -> Iterator[Any]:
    """A cursor in a transaction with this module's HNSW settings, and no
    parallel workers."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', 'strict_order', true), "
            "set_config('hnsw.max_scan_tuples', %s, true), "
            # Starting parallel workers costs milliseconds, more than these
            # queries take; a busy site has no idle cores for them anyway.
            "set_config('max_parallel_workers_per_gather', '0', true), "
            # A backstop: a search that runs away is cancelled (the API and
            # the page answer 503), instead of holding a worker.
            "set_config('statement_timeout', %s, true)",
            [
                str(int(shop_search_settings.EF_SEARCH)),
                str(int(shop_search_settings.MAX_SCAN_TUPLES)),
                str(int(float(shop_search_settings.STATEMENT_TIMEOUT) * 1000)),
            ],
        )
        yield cursor


def _run(queryset: models.QuerySet, using: str) -> list[Any]:
    """Evaluate an index-ordered query with this module's HNSW settings."""
    with hnsw_cursor(using):
        return list(queryset)


def check_limit(limit: int | None, offset: int) -> int:
    if limit is None:
        limit = shop_search_settings.DEFAULT_LIMIT
    maximum = shop_search_settings.MAX_LIMIT
    if not 1 <= limit <= maximum:
        raise QueryError(f"limit must be from 1 to {maximum}.", code="invalid_limit")
    if offset < 0:
        raise QueryError("offset must be 0 or more.", code="invalid_offset")
    return limit
