"""
Rate limits shared by the API and the storefront page.

A client is the authenticated user, else its address: ``REMOTE_ADDR``, or,
behind ``SHOP_SEARCH['NUM_PROXIES']`` trusted reverse proxies, the address
the outermost trusted proxy appended to ``X-Forwarded-For``. With the default
of 0 the header is ignored, since any client can send one.

Counts live in the Django cache ``CACHE_ALIAS`` as one counter per client,
scope and time window, raised with the cache's atomic ``incr`` (Redis), so
that every process of the site counts the same requests. Windows are fixed
(each minute of the clock for ".../min"), so a client may spend its limit
at the end of one window and again at the start of the next. A per-process cache
(``LocMemCache``, Django's default) multiplies every limit by the number of
processes: use Redis or the database cache in production.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import caches
from django.http import HttpRequest

from .conf import shop_search_settings

__all__ = [
    "client_address",
    "client_ident",
    "rate",
    "hit",
    "blocked",
    "AUTH_SCOPE",
]

#: Failed authentication attempts (wrong passwords) per client address.
AUTH_SCOPE = "shop_search_auth"

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def client_address(request: HttpRequest) -> str:
    """The client's address, trusting only ``NUM_PROXIES`` proxies."""
    remote = request.META.get("REMOTE_ADDR") or ""
    proxies = int(shop_search_settings.NUM_PROXIES or 0)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    addresses = [a.strip() for a in forwarded.split(",") if a.strip()]
    if not addresses:
        return remote
    return addresses[-min(proxies, len(addresses))]


def client_ident(request: HttpRequest, user: Any = None) -> str:
    """The user when authenticated, else the client's address."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return f"addr:{client_address(request)}"


def rate(scope: str) -> tuple[int, int] | None:
    """``(requests, seconds)`` for ``scope``, or None when it has no limit.
    A rate in ``REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']`` wins over
    ``SHOP_SEARCH['THROTTLE_RATES']``."""
    rates = dict(shop_search_settings.THROTTLE_RATES or {})
    try:
        from rest_framework.settings import api_settings
    except ImportError:  # the page works without DRF installed
        pass
    else:
        rates.update(api_settings.DEFAULT_THROTTLE_RATES or {})
    value = rates.get(scope)
    if not value:
        return None
    number, period = value.split("/")
    return int(number), _PERIODS[period.strip()[0]]


def _window(scope: str, ident: str) -> tuple[str, int, float] | None:
    limit = rate(scope)
    if limit is None:
        return None
    number, seconds = limit
    now = time.time()
    window = int(now // seconds)
    retry_after = (window + 1) * seconds - now
    return f"shop_search:throttle:{scope}:{window}:{ident}", number, retry_after


def hit(scope: str, ident: str) -> float | None:
    """Count a request; None if allowed, else seconds until the next is."""
    window = _window(scope, ident)
    if window is None:
        return None
    key, number, retry_after = window
    count = _count(caches[shop_search_settings.CACHE_ALIAS], key, int(retry_after) + 1)
    return None if count <= number else retry_after


def _count(cache: Any, key: str, timeout: int) -> int:
    """
    Add one to the counter ``key`` (created for ``timeout`` seconds) and
    return it. On Django's Redis cache, one round trip: ``SET NX EX`` and
    ``INCR`` in one pipeline. On other caches, ``incr`` first: the counter
    usually exists, and only a window's first request also adds it.
    """
    client = _redis_client(cache, key)
    if client is not None:
        key = cache.make_and_validate_key(key)
        pipeline = client.pipeline(transaction=False)
        pipeline.set(key, 0, ex=timeout, nx=True)
        pipeline.incr(key)
        return int(pipeline.execute()[1])
    try:
        return cache.incr(key)
    except ValueError:  # the window's first request
        if cache.add(key, 1, timeout):
            return 1
        return cache.incr(key)  # another request added it meanwhile


def _redis_client(cache: Any, key: str) -> Any:
    """The redis-py client behind Django's own Redis cache, else None."""
    from django.core.cache.backends.redis import RedisCache

    if not isinstance(cache, RedisCache):
        return None
    return cache._cache.get_client(key, write=True)


def blocked(scope: str, ident: str) -> float | None:
    """Like :func:`hit`, without counting: seconds to wait, or None."""
    window = _window(scope, ident)
    if window is None:
        return None
    key, number, retry_after = window
    count = caches[shop_search_settings.CACHE_ALIAS].get(key, 0)
    return None if count < number else retry_after
