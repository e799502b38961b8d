from __future__ import annotations

from rest_framework.throttling import ScopedRateThrottle

from ..conf import shop_search_settings


class SearchRateThrottle(ScopedRateThrottle):
    """
    Scoped throttle for the search views (scopes ``shop_search_text`` and
    ``shop_search_image``). A rate in ``REST_FRAMEWORK
    ['DEFAULT_THROTTLE_RATES']`` wins over ``SHOP_SEARCH['THROTTLE_RATES']``;
    a scope with no rate (``None``) is not throttled.
    """

    def get_rate(self) -> str | None:
        from rest_framework.settings import api_settings

        rates = {
            **shop_search_settings.THROTTLE_RATES,
            **(api_settings.DEFAULT_THROTTLE_RATES or {}),
        }
        return rates.get(self.scope)
