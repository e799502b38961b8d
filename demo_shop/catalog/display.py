"""How the demo's products show on the storefront page's result cards."""

from __future__ import annotations

from typing import Any


def price_label(product: Any, request: Any) -> str:
    """``RESULT_PRICE``: the price with its currency, e.g. "12.90 EUR"."""
    return f"{product.price} {product.currency}"
