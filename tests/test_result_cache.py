"""The ranking cache: repeated searches are cheap and never cross querysets."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIRequestFactory, force_authenticate

from demo_shop.catalog.models import Product
from shop_search import search
from shop_search.api.views import TextSearchView

pytestmark = pytest.mark.django_db


class StockAwareSearch(TextSearchView):
    """The README's way to restrict results: staff see all, shoppers in stock."""

    def get_queryset(self):
        products = super().get_queryset()
        if self.request.user.is_staff:
            return products
        return products.filter(in_stock=True)


@pytest.fixture
def cached(settings):
    cache.clear()
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "RESULT_CACHE_SECONDS": 30}
    yield
    cache.clear()


def _search(user, query="red dress", limit=40):
    request = APIRequestFactory().get("/api/search/", {"q": query, "limit": limit})
    if user is not None:
        force_authenticate(request, user=user)
    else:
        request.user = AnonymousUser()
    response = StockAwareSearch.as_view()(request)
    assert response.status_code == 200, response.data
    return [hit["product"]["id"] for hit in response.data["results"]]


def test_a_staff_ranking_is_never_served_to_a_shopper(catalog, cached):
    Product.objects.filter(pk__in=Product.objects.order_by("pk")[:60]).update(
        in_stock=False
    )
    hidden = set(Product.objects.filter(in_stock=False).values_list("pk", flat=True))
    staff = User.objects.create_user("staff", is_staff=True)

    staff_first = _search(staff)
    assert hidden & set(staff_first)  # staff see out-of-stock products
    shopper = _search(None)
    assert shopper and not hidden & set(shopper)
    # And the other way round: a shopper's cached ranking is not staff's.
    cache.clear()
    shopper_first = _search(None)
    assert not hidden & set(shopper_first)
    assert hidden & set(_search(staff))
    # Each side's repeat gets its own list again.
    assert _search(None) == shopper_first
    assert _search(staff) == staff_first


def test_a_repeated_query_skips_the_nearest_neighbour_query(catalog, cached):
    first = _search(None, "blue hat", limit=5)
    with CaptureQueriesContext(connection) as queries:
        again = _search(None, "blue hat", limit=5)
    assert again == first
    assert not any(
        "<#>" in q["sql"] or "to_tsquery" in q["sql"] for q in queries.captured_queries
    )
    # Other parameters are another ranking.
    with CaptureQueriesContext(connection) as queries:
        assert len(_search(None, "blue hat", limit=6)) == 6
    assert any("<#>" in q["sql"] for q in queries.captured_queries)


def test_a_product_deleted_after_caching_drops_out(catalog, cached):
    first = _search(None, "green shoe", limit=5)
    Product.objects.filter(pk=first[0]).delete()
    assert _search(None, "green shoe", limit=5) == first[1:]


def test_off_when_the_setting_is_zero(catalog, settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "RESULT_CACHE_SECONDS": 0}
    queryset = Product.objects.all()
    vector = search.text_vector("red dress")
    search.nearest(queryset, vector, limit=3)
    with CaptureQueriesContext(connection) as queries:
        search.nearest(queryset, vector, limit=3)
    assert any("<#>" in q["sql"] for q in queries.captured_queries)
