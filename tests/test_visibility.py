"""One declared base queryset hides a product from every read."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from demo_shop.catalog.models import Product

from .conftest import png_bytes

pytestmark = pytest.mark.django_db


def in_stock_for_shoppers(request):
    """What a shop declares: staff see everything, shoppers what is in stock."""
    products = Product.objects.all()
    if request is not None and request.user.is_staff:
        return products
    return products.filter(in_stock=True)


@pytest.fixture
def visibility(settings, catalog):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "VISIBLE_PRODUCTS": "tests.test_visibility.in_stock_for_shoppers",
    }
    every_other = list(Product.objects.order_by("pk").values_list("pk", flat=True))
    Product.objects.filter(pk__in=every_other[::2]).update(in_stock=False)
    return set(Product.objects.filter(in_stock=False).values_list("pk", flat=True))


def _ids(body):
    return {hit["product"]["id"] for hit in body["results"]}


def test_text_photo_and_look_searches_never_show_hidden_products(client, visibility):
    text = client.get("/api/search/", {"q": "red dress", "limit": 100}).json()
    assert len(text["results"]) == 50 and not _ids(text) & visibility
    for group in ("none", "look"):
        photo = SimpleUploadedFile("p.png", png_bytes("red"), "image/png")
        body = client.post(
            "/api/search/image/", {"image": photo, "group": group, "limit": 100}
        ).json()
        if group == "look":
            pages = [item for item in body["items"]] + [body["whole_image"]]
            assert all(not _ids(page) & visibility for page in pages)
        else:
            assert len(body["results"]) == 50 and not _ids(body) & visibility


def test_a_hidden_product_has_no_similar_page_like_a_missing_one(client, visibility):
    hidden = client.get(f"/api/products/{min(visibility)}/similar/")
    missing = client.get("/api/products/999999999/similar/")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    shown = Product.objects.filter(in_stock=True).first()
    similar = client.get(f"/api/products/{shown.pk}/similar/", {"limit": 100}).json()
    assert similar["results"] and not _ids(similar) & visibility


def test_the_page_shows_only_visible_products(client, visibility):
    page = client.get("/search/", {"q": "red dress"})
    hidden_names = set(
        Product.objects.filter(pk__in=visibility).values_list("name", flat=True)
    )
    shown = page.context["results"]
    assert shown and not {r["product"].name for r in shown} & hidden_names


def test_staff_see_what_the_declaration_gives_them(admin_client, visibility):
    body = admin_client.get("/api/search/", {"q": "red dress", "limit": 100}).json()
    assert visibility <= _ids(body)


def test_a_filter_across_many_rows_does_not_repeat_a_product(client, catalog, settings):
    # category__products__colour joins each product to every product of its
    # category: 50 rows per product without the subquery.
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "FILTERS": {"sibling_colour": "category__products__colour"},
    }
    body = client.get(
        "/api/search/", {"q": "shoe", "sibling_colour": "common", "limit": 100}
    ).json()
    ids = [hit["product"]["id"] for hit in body["results"]]
    assert len(ids) == len(set(ids)) == 100
