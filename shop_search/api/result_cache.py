"""
A short-lived cache of text-search responses, so that a repeated query (the
same words, filters and page) is answered without touching the models or the
database. ``SHOP_SEARCH['RESULT_CACHE_SECONDS']`` (default 30; 0 turns it
off) bounds how long a product change can take to show in a repeated query.
The key includes the serving models, so a model switch never serves old
results.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.cache import caches

from ..conf import shop_search_settings

__all__ = ["key", "get", "set"]


def key(request: Any, query: str, current: Any) -> str | None:
    if not shop_search_settings.RESULT_CACHE_SECONDS:
        return None
    params = sorted(
        (name, value) for name, value in request.query_params.lists() if name != "q"
    )
    raw = repr(
        (
            request.get_host(),
            request.path,
            query,
            params,
            current.image_model,
            current.text_model,
            shop_search_settings.PRODUCT_SERIALIZER,
        )
    )
    return "shop_search:results:" + hashlib.sha256(raw.encode()).hexdigest()


def get(cache_key: str | None) -> Any:
    if cache_key is None:
        return None
    return caches[shop_search_settings.CACHE_ALIAS].get(cache_key)


def set(cache_key: str | None, body: Any) -> None:  # noqa: A001 - module API
    if cache_key is not None:
        caches[shop_search_settings.CACHE_ALIAS].set(
            cache_key, body, shop_search_settings.RESULT_CACHE_SECONDS
        )
