"""
A short-lived cache of rankings, so that a repeated search (the same query,
filters and page) skips the nearest-neighbour query.

What is cached is the ranking only: product keys and scores, never a
serialized response. The key is the database (host, port and name), the
final SQL of the candidate queryset (with its parameters), the query vector
and the ranking settings, so a result computed for one queryset is never
served for another: a view that restricts products per user, channel or
stock gets a different key for each restriction, whatever way it builds the
queryset. The products themselves are fetched again through that same
queryset on every request, and serialized for the request at hand (its
user, language and serializer).

``SHOP_SEARCH['RESULT_CACHE_SECONDS']`` (0 turns it off) bounds how long a
product change can take to show in a repeated query; the cache lives in
``CACHE_ALIAS``, shared across processes when that is Redis or the database.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from django.core.cache import caches
from django.db import connections, models

from .conf import shop_search_settings

__all__ = ["ranking_key", "get", "put"]


def ranking_key(
    queryset: models.QuerySet, vector: np.ndarray, **options: Any
) -> str | None:
    """The cache key for ranking ``queryset`` by ``vector``, or None when off."""
    if not shop_search_settings.RESULT_CACHE_SECONDS or queryset.query.is_empty():
        return None
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    database = connections[queryset.db].settings_dict
    digest = hashlib.sha256()
    digest.update(
        repr(
            (
                # The database itself, not only its alias: sites (or staging
                # and production) sharing one Redis have the same aliases,
                # SQL and primary keys, and must not share rankings.
                database.get("HOST"),
                database.get("PORT"),
                database.get("NAME"),
                queryset.db,
                sql,
                params,
                sorted(options.items()),
                shop_search_settings.EF_SEARCH,
                shop_search_settings.MAX_SCAN_TUPLES,
                shop_search_settings.EXACT_SCAN_THRESHOLD,
            )
        ).encode()
    )
    digest.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    return "shop_search:ranking:" + digest.hexdigest()


def get(key: str | None) -> Any:
    if key is None:
        return None
    return caches[shop_search_settings.CACHE_ALIAS].get(key)


def put(key: str | None, value: Any) -> None:
    if key is not None:
        caches[shop_search_settings.CACHE_ALIAS].set(
            key, value, shop_search_settings.RESULT_CACHE_SECONDS
        )
