"""DRF's side of :mod:`shop_search.throttling`."""

from __future__ import annotations

from typing import Any

from rest_framework.throttling import BaseThrottle

from .. import throttling

__all__ = ["SearchRateThrottle"]


class SearchRateThrottle(BaseThrottle):
    """
    Per-scope rate limit for the search views (the view's ``throttle_scope``:
    ``shop_search_text`` or ``shop_search_image``), counted in the shared
    cache per user or client address; see :mod:`shop_search.throttling`.
    A scope with no rate (``None``) is not throttled.
    """

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = getattr(view, "throttle_scope", None)
        if not scope:
            return True
        ident = throttling.client_ident(request._request, request.user)
        self.retry_after = throttling.hit(scope, ident)
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after
