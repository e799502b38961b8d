"""
Ranking products by vector: nearest neighbours through the HNSW index or an
exact scan, full pages under filters, and the short-lived ranking cache.
Every function takes the candidate queryset (visibility and filters applied)
and returns a :class:`Page` of :class:`Hit`, best first. How many vectors
to ask for, and whether to scan exactly, comes from
:mod:`shop_search.estimates`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.db import connections, models, transaction

from . import result_cache
from .conf import shop_search_settings
from .estimates import (
    candidate_sql,
    channel_vector_depth,
    estimated_rows,
    for_one_search,
    ranks_exactly,
    vector_depth,
)
from .models import ImageVector, serving
from .vectors import QueryError

__all__ = [
    "Hit",
    "Page",
    "nearest",
    "rank_nearest",
    "estimated_rows",  # moved to shop_search.estimates; importable here too
    "check_limit",
    "hnsw_cursor",
    "image_channel_sql",
    "stored_vector",
    "vector_literal",
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
    exclude_group: str | None = None,
) -> Page:
    """
    The products of ``queryset`` nearest to ``vector``, best first, each
    family (a product and its variants) once, by its best image.

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
        exclude_group=exclude_group,
    )


def rank_nearest(
    queryset: models.QuerySet,
    vector: np.ndarray,
    *,
    limit: int,
    offset: int = 0,
    min_score: float | None = None,
    image_model: str | None = None,
    exclude_group: str | None = None,
) -> Page:
    """:func:`nearest` without the ``MAX_LIMIT`` check, for internal
    rankings (the noise floors, the evaluation report). ``exclude_group``
    leaves out a family (a product and its variants)."""
    if queryset.query.is_empty():  # e.g. a filter on a category that is gone
        return Page(hits=[], limit=limit, offset=offset, has_more=False)
    queryset = for_one_search(queryset)
    if min_score is None:
        min_score = shop_search_settings.MIN_SCORE
    image_model = image_model or serving(queryset.db).image_model
    cache_key = result_cache.ranking_key(
        queryset,
        vector,
        limit=limit,
        offset=offset,
        min_score=min_score,
        models=(image_model, exclude_group),
    )
    cached = result_cache.get(cache_key)
    if cached is not None:
        return _cached_page(queryset, cached, limit=limit, offset=offset)
    wanted = offset + limit + 1
    exact = ranks_exactly(queryset, image_model)
    ranked: list[tuple[str, float]] = []
    if not exact:
        ranked = _families(
            queryset, vector, image_model, wanted, exact=False, exclude=exclude_group
        )
        if len(ranked) < wanted and _has_more_candidates(queryset, len(ranked), offset):
            exact = True  # the iterative scan stopped before the page was full
    if exact:
        ranked = _families(
            queryset, vector, image_model, wanted, exact=True, exclude=exclude_group
        )
    window = ranked[offset:]
    has_more = len(window) > limit
    to_python = queryset.model._meta.pk.to_python
    page = [(to_python(key), distance) for key, distance in window[:limit]]
    rows = queryset.in_bulk([pk for pk, _distance in page])
    # halfvec rounding can put a perfect match a hair above 1.
    hits = [
        Hit(rows[pk], min(1.0, -float(distance)), ["image"])
        for pk, distance in page
        if pk in rows
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


def _families(
    queryset: models.QuerySet,
    vector: np.ndarray,
    image_model: str,
    wanted: int,
    *,
    exact: bool,
    exclude: str | None,
) -> list[tuple[str, float]]:
    """
    The ``wanted`` best families as ``(object_pk, distance)``. Products with
    several images (and families of variants) take several vectors each:
    ask for more vectors until the page is full or none are left.
    """
    depth = vector_depth(queryset, image_model, wanted)
    while True:
        sql, params = _ranking_sql(
            queryset,
            vector,
            image_model,
            depth=depth,
            exact=exact,
            exclude_group=exclude,
        )
        with hnsw_cursor(queryset.db) as cursor:
            cursor.execute(sql, [*params, wanted])
            rows = cursor.fetchall()
        seen = rows[0][2] if rows else 0
        ranked = [(key, distance) for key, distance, _seen in rows]
        exhausted = seen < depth
        if len(ranked) >= wanted or exhausted or (not exact and depth >= 48 * wanted):
            return ranked
        depth *= 4


def _has_more_candidates(queryset: models.QuerySet, found: int, offset: int) -> bool:
    """Whether candidate products remain beyond the ``found`` ranked (some
    may have no vector: then the exact scan that follows finds the same)."""
    return queryset.order_by()[offset + found : offset + found + 1].exists()


def _ranking_sql(
    queryset: models.QuerySet,
    vector: np.ndarray,
    image_model: str,
    *,
    depth: int,
    exact: bool,
    exclude_group: str | None = None,
) -> tuple[str, list[Any]]:
    """
    SQL selecting ``(object_pk, distance, vectors seen)``, best first, one
    row per family (its best image), ``LIMIT %s`` left to the caller: the
    ``depth`` nearest image vectors through the HNSW index, or with
    ``exact`` by a top-``depth`` scan of the candidates' vectors.
    """
    using = queryset.db
    content_type = ContentType.objects.db_manager(using).get_for_model(
        queryset.model, for_concrete_model=False
    )
    literal = vector_literal(vector)
    where = "v.content_type_id = %s AND v.image_model = %s"
    params_where: list[Any] = [content_type.pk, image_model]
    if exclude_group is not None:
        where += " AND v.group_pk <> %s"
        params_where.append(exclude_group)
    candidates = ""
    candidate_params: list[Any] = []
    if queryset.query.where or exact:
        compiled, candidate_params = candidate_sql(queryset)
        pk_type = queryset.model._meta.pk.cast_db_type(connections[using])
        candidates = f"({compiled}) AS c(pk)"
    # The query vector is sent once: ordering by the selected distance's
    # name is ordering by its expression, which the HNSW index serves.
    if exact:
        # Every vector of the candidates, joined by key; ordering by an
        # expression the index cannot serve keeps the planner off it, and
        # the LIMIT makes the sort a top-N heap.
        inner = (
            "SELECT object_pk, group_pk, d FROM (SELECT v.object_pk, "
            "v.group_pk, (v.vector <#> %s::halfvec) AS d "
            f"FROM {candidates} JOIN shop_search_imagevector v "
            f"ON v.object_pk = c.pk::text AND {where}) AS e "
            "ORDER BY d * 1.0 LIMIT %s"
        )
        params = [literal, *candidate_params, *params_where, depth]
    else:
        inner = (
            "SELECT v.object_pk, v.group_pk, (v.vector <#> %s::halfvec) AS d "
            f"FROM shop_search_imagevector v WHERE {where}"
        )
        params = [literal, *params_where]
        if candidates:
            inner += (
                f" AND EXISTS (SELECT 1 FROM {candidates} "
                f"WHERE c.pk = v.object_pk::{pk_type})"
            )
            params += candidate_params
        inner += " ORDER BY d LIMIT %s"
        params += [depth]
    sql = (
        f"WITH i AS MATERIALIZED ({inner}) "
        "SELECT object_pk, d, (SELECT count(*) FROM i) FROM ("
        "SELECT DISTINCT ON (group_pk) object_pk, d FROM i "
        "ORDER BY group_pk, d, object_pk) AS best ORDER BY d, object_pk LIMIT %s"
    )
    return sql, params


def vector_literal(vector: np.ndarray) -> str:
    """A query vector as pgvector's text form, for raw SQL. Kept for the
    last few vectors: a text search sends its vector twice (the image and
    meaning channels), and a repeated query sends the same one again."""
    return _literal(np.asarray(vector, dtype=np.float32).tobytes())


@functools.lru_cache(maxsize=256)
def _literal(data: bytes) -> str:
    values = np.frombuffer(data, dtype=np.float32)
    return "[" + ",".join(f"{float(v):.7g}" for v in values) + "]"


def stored_vector(obj: Any, image_model: str | None = None) -> np.ndarray | None:
    """The vector of ``obj``'s first image (by display position), or None."""
    using = obj._state.db or "default"
    content_type = ContentType.objects.db_manager(using).get_for_model(
        type(obj), for_concrete_model=False
    )
    row = (
        ImageVector.objects.using(using)
        .filter(
            content_type=content_type,
            object_pk=str(obj.pk),
            image_model=image_model or serving(using).image_model,
        )
        .order_by("position", "pk")
        .values_list("vector", flat=True)
        .first()
    )
    return None if row is None else np.asarray(row, dtype=np.float32)


def image_channel_sql(
    queryset: models.QuerySet, vector: np.ndarray, *, depth: int, image_model: str
) -> tuple[str, list[Any]] | None:
    """
    SQL selecting ``(pk, distance)`` of the ``depth`` products nearest to
    ``vector``, one per family, to run inside another statement (the text
    search's channels): an exact scan for few candidates, else the HNSW
    index, as in :func:`rank_nearest` (without its refill: a channel may
    come up short). None for a queryset that is empty by construction.
    """
    if queryset.query.is_empty():
        return None
    exact = ranks_exactly(queryset, image_model)
    sql, params = _ranking_sql(
        queryset,
        vector,
        image_model,
        depth=channel_vector_depth(queryset, image_model, depth),
        exact=exact,
    )
    return f"SELECT object_pk, d FROM ({sql}) AS ranked", [*params, depth]


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


#: The settings of every ranking statement, local to its transaction.
_HNSW_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %s, true), "
    # Relaxed order finds more of the true neighbours under a filter
    # (pgvector's README); the statements sort what it returns.
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('hnsw.max_scan_tuples', %s, true), "
    # Starting parallel workers costs milliseconds, more than these
    # queries take; a busy site has no idle cores for them anyway.
    "set_config('max_parallel_workers_per_gather', '0', true), "
    # A backstop: a search that runs away is cancelled (the API and
    # the page answer 503), instead of holding a worker.
    "set_config('statement_timeout', %s, true)"
)


class _SettingsCursor:
    """A cursor that sends :data:`_HNSW_SETTINGS` and each statement in one
    message (see :func:`hnsw_cursor`), then reads the statement's rows."""

    def __init__(self, cursor: Any, params: list[str]) -> None:
        self.cursor, self.params = cursor, params

    def execute(self, sql: str, params: Any = ()) -> None:
        self.cursor.execute(f"{_HNSW_SETTINGS}; {sql}", [*self.params, *params])
        self.cursor.nextset()  # past set_config's row, to the statement's

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


@contextmanager
def hnsw_cursor(using: str) -> Iterator[Any]:
    """
    A cursor whose statements run with this module's HNSW settings, no
    parallel workers and ``STATEMENT_TIMEOUT``, all local to the statement's
    transaction: nothing stays on the (pooled) connection.

    With Django's default client-side binding, the settings and the
    statement go to PostgreSQL in one simple-query message, which it runs as
    one transaction (an implicit one in autocommit mode): one round trip per
    search instead of four (BEGIN, settings, statement, COMMIT). Inside a
    transaction (``ATOMIC_REQUESTS``) a savepoint keeps a cancelled search
    from breaking it. With ``server_side_binding`` (one statement per
    message) the settings go first, in a transaction.
    """
    connection = connections[using]
    params = [
        str(int(shop_search_settings.EF_SEARCH)),
        str(int(shop_search_settings.MAX_SCAN_TUPLES)),
        str(int(float(shop_search_settings.STATEMENT_TIMEOUT) * 1000)),
    ]
    if connection.settings_dict["OPTIONS"].get("server_side_binding"):
        with transaction.atomic(using=using), connection.cursor() as cursor:
            cursor.execute(_HNSW_SETTINGS, params)
            yield cursor
    elif connection.get_autocommit():
        with connection.cursor() as cursor:
            yield _SettingsCursor(cursor, params)
    else:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            yield _SettingsCursor(cursor, params)


def check_limit(limit: int | None, offset: int) -> int:
    if limit is None:
        limit = shop_search_settings.DEFAULT_LIMIT
    maximum = shop_search_settings.MAX_LIMIT
    if not 1 <= limit <= maximum:
        raise QueryError(f"limit must be from 1 to {maximum}.", code="invalid_limit")
    if offset < 0:
        raise QueryError("offset must be 0 or more.", code="invalid_offset")
    return limit
