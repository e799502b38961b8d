"""Rankings cached for one database are never served for another one that
shares the cache (two sites, or staging and production, on one Redis)."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connections
from django.test.utils import override_settings

from demo_shop.catalog.models import Product
from shop_search import result_cache

pytestmark = pytest.mark.django_db


def test_the_same_search_on_another_database_has_another_key(monkeypatch):
    vector = np.ones(512, dtype=np.float32)
    with override_settings(SHOP_SEARCH={"RESULT_CACHE_SECONDS": 60}):
        here = result_cache.ranking_key(Product.objects.all(), vector, limit=5)
        settings = dict(connections["default"].settings_dict)
        settings["NAME"] = "another_shop"
        monkeypatch.setattr(connections["default"], "settings_dict", settings)
        there = result_cache.ranking_key(Product.objects.all(), vector, limit=5)
    assert here and there and here != there
