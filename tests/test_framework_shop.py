"""
A catalog shaped like a shop framework's, made searchable with the README's
snippet: a product model shop_search does not own, gallery images,
many-to-many category trees, stock records, variants and visibility.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.urls import reverse

from shop_search import categories
from shop_search.indexing import index_objects, pending_queryset
from shop_search.models import IndexStatus
from shop_search.testing import index_view
from tests.framework_shop.models import (
    Category,
    Product,
    ProductImage,
    StockRecord,
)

from .conftest import png_bytes

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def _add_image(product, colour, order):
    image = ProductImage(product=product, display_order=order)
    image.original.save(f"{colour}.png", ContentFile(png_bytes(colour)), save=False)
    image.save()
    return image


def _product(title, cats=(), colours=(), prices=(10, 20), **fields):
    product = Product.objects.create(title=title, upc=f"UPC-{title}", **fields)
    product.categories.set(cats)
    for order, colour in enumerate(colours):
        _add_image(product, colour, order)
    for partner, price in zip("AB", prices, strict=False):
        StockRecord.objects.create(product=product, partner=partner, price=price)
    return product


@pytest.fixture
def shop(settings):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "PRODUCT_MODEL": "framework_shop.Product",
        "FILTERS": {"max_price": "stockrecords__price__lte"},
        "PRODUCT_SERIALIZER": "shop_search.api.serializers.ProductSerializer",
        "RESULT_PRICE": "tests.framework_shop.models.lowest_price",
        "RESULT_URL": "tests.framework_shop.models.product_url",
    }
    settings.ROOT_URLCONF = "tests.framework_shop.urls"
    clothing = Category.objects.create(name="Clothing")
    dresses = Category.objects.create(name="Dresses", parent=clothing)
    evening = Category.objects.create(name="Evening dresses", parent=dresses)
    shoes = Category.objects.create(name="Shoes")
    sale = Category.objects.create(name="Sale")
    shop = {
        "clothing": clothing,
        "dresses": dresses,
        "shoes": shoes,
        "sale": sale,
        "Red gown": _product("Red gown", [evening, sale], ["red", "maroon"], (10, 20)),
        "Blue dress": _product("Blue dress", [dresses], ["blue", "navy"], (11, 21)),
        "Boots": _product("Boots", [shoes, sale], ["brown", "black"], (12, 22)),
        "Sandals": _product("Sandals", [shoes], ["yellow", "gold"], (13, 23)),
        # Hidden from shoppers: not public; public but not in stock.
        "Draft dress": _product("Draft dress", [dresses], ["pink"], is_public=False),
        "Sold-out dress": _product("Sold-out dress", [dresses], ["purple"], prices=()),
    }
    parent = _product("Summer dress", [dresses], ["white", "ivory"])
    shop["Summer dress"] = parent
    shop["Summer dress S"] = _product("Summer dress S", [dresses], [], parent=parent)
    shop["Summer dress green"] = _product(
        "Summer dress green", [dresses], ["green"], parent=parent
    )
    # Saves index after commit; inside the test's transaction, index now.
    index_objects(Product, [p.pk for p in Product.objects.all()])
    return shop


def _titles(body):
    return sorted(hit["product"]["name"] for hit in body["results"])


def test_the_test_shop_uses_the_readme_snippet_as_it_stands():
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"shop_search\.register\(\n(.*?)\n\s*\)\n", readme, re.S)
    apps = (ROOT / "tests/framework_shop/apps.py").read_text()
    lines = [line.strip() for line in snippet.group(1).splitlines()]
    for line in lines:
        assert line.split("  #")[0].strip() in apps
    whole = re.search(r"```python\n(\s*def ready.*?)```", readme, re.S).group(1)
    assert len(whole.strip().splitlines()) <= 15


def test_every_gallery_image_is_encoded_and_each_finds_its_product(client, shop):
    gown = shop["Red gown"]
    assert index_view(gown).status == IndexStatus.INDEXED
    assert len(index_view(gown).vectors) == 2
    for colour in ("red", "maroon"):  # the main photo and the second one
        response = client.post(
            "/api/search/image/",
            {"image": ContentFile(png_bytes(colour), name="photo.png")},
        )
        assert response.status_code == 200
        assert response.json()["results"][0]["product"]["name"] == "Red gown"


def test_gallery_changes_re_encode_only_what_changed(
    shop, encode_spy, django_capture_on_commit_callbacks
):
    boots = shop["Boots"]
    first, second = boots.images.order_by("display_order")
    before = index_view(boots).vectors
    encode_spy.clear()
    with django_capture_on_commit_callbacks(execute=True):
        third = _add_image(boots, "white", 2)
    assert encode_spy == [1] and len(index_view(boots).vectors) == 3

    encode_spy.clear()
    with django_capture_on_commit_callbacks(execute=True):
        second.display_order, first.display_order = 0, 1
        second.save()
        first.save()
    assert encode_spy == []
    assert list(index_view(boots).vectors)[0] == f"images__original:{second.pk}"

    with django_capture_on_commit_callbacks(execute=True):
        third.delete()
    assert encode_spy == [] and len(index_view(boots).vectors) == 2

    with django_capture_on_commit_callbacks(execute=True):
        first.original.save("grey.png", ContentFile(png_bytes("grey")))
    assert encode_spy == [1]
    after = index_view(boots).vectors
    key = f"images__original:{first.pk}"
    assert not np.allclose(after[key], before[key])
    assert index_view(boots).status == IndexStatus.INDEXED


def test_bulk_gallery_updates_are_found_by_reindex(shop, encode_spy):
    sandals = shop["Sandals"]
    ProductImage.objects.filter(product=sandals).update(
        original=shop["Boots"].images.first().original.name
    )
    assert index_view(sandals).status == IndexStatus.STALE
    assert list(pending_queryset(Product)) == [sandals]
    call_command(
        "shop_search_reindex", "--model", "framework_shop.Product", verbosity=0
    )
    assert index_view(sandals).status == IndexStatus.INDEXED
    assert encode_spy == []  # the same file as the boots' photo: copied


def test_a_parent_category_finds_the_products_of_its_descendants(client, shop):
    body = client.get(
        "/api/search/", {"q": "dress", "category": shop["clothing"].pk}
    ).json()
    titles = _titles(body)
    assert "Blue dress" in titles  # Clothing > Dresses
    assert len([t for t in titles if t.startswith("Summer dress")]) == 1
    assert {"Boots", "Sandals"}.isdisjoint(titles)
    body = client.get("/api/search/", {"q": "dress", "category": shop["sale"].pk})
    assert _titles(body.json()) == ["Boots", "Red gown"]


def test_two_stock_records_under_a_price_filter_give_one_hit(client, shop):
    body = client.get("/api/search/", {"q": "shoe", "max_price": "25"}).json()
    titles = [hit["product"]["name"] for hit in body["results"]]
    assert len(titles) == len(set(titles))
    assert {"Blue dress", "Boots", "Red gown", "Sandals"} <= set(titles)


def test_hidden_products_never_reach_shoppers(client, shop):
    hidden = {"Draft dress", "Sold-out dress"}
    for query in ("dress", "draft", "sold"):
        body = client.get("/api/search/", {"q": query, "limit": 50}).json()
        assert hidden.isdisjoint(_titles(body))
    for colour in ("pink", "purple"):  # their own photos
        body = client.post(
            "/api/search/image/",
            {"image": ContentFile(png_bytes(colour), name="p.png"), "limit": 50},
        ).json()
        assert hidden.isdisjoint(_titles(body))
    draft = shop["Draft dress"]
    hidden_answer = client.get(f"/api/products/{draft.pk}/similar/")
    missing_answer = client.get("/api/products/999999/similar/")
    assert hidden_answer.status_code == missing_answer.status_code == 404
    assert hidden_answer.json() == missing_answer.json()
    visible = client.get(f"/api/products/{shop['Boots'].pk}/similar/", {"limit": 50})
    assert hidden.isdisjoint(_titles(visible.json()))
    suggestions = client.get("/api/suggest/", {"q": "dra"}).json()
    assert "Draft dress" not in str(suggestions)
    page = client.get("/find/", {"q": "dress"}).content.decode()
    assert "Draft dress" not in page and "Sold-out dress" not in page


def test_variants_are_one_hit_with_the_best_matching_member(client, shop):
    child = shop["Summer dress S"]
    parent = shop["Summer dress"]
    # A child without images shows its parent's (copied, not encoded again).
    assert index_view(child).status == IndexStatus.INDEXED
    np.testing.assert_array_equal(index_view(child).vector, index_view(parent).vector)
    body = client.post(
        "/api/search/image/",
        {"image": ContentFile(png_bytes("green"), name="g.png"), "limit": 50},
    ).json()
    names = [hit["product"]["name"] for hit in body["results"]]
    family = [n for n in names if n.startswith("Summer dress")]
    assert family == ["Summer dress green"]  # one hit: the green variant
    body = client.post(
        "/api/search/image/",
        {"image": ContentFile(png_bytes("white"), name="w.png"), "limit": 50},
    ).json()
    family = [
        h["product"]["name"]
        for h in body["results"]
        if h["product"]["name"].startswith("Summer")
    ]
    assert len(family) == 1
    text = client.get("/api/search/", {"q": "summer", "limit": 50}).json()
    assert len([n for n in _titles(text) if n.startswith("Summer")]) == 1
    similar = client.get(f"/api/products/{parent.pk}/similar/", {"limit": 50}).json()
    assert not any(n.startswith("Summer") for n in _titles(similar))


def test_suggestions_add_a_category_and_keep_the_others(shop):
    gown = shop["Red gown"]
    changes = categories.apply_suggestions(
        Product.objects.filter(pk=gown.pk), threshold=0.0
    )
    assert len(changes) == 1
    _product, old, new, _p = changes[0]
    assert old is None
    names = {c.name for c in gown.categories.all()}
    assert names == {"Evening dresses", "Sale", new.name} and len(names) == 3


def test_the_admin_answers_with_many_to_many_categories_and_variants(client, shop):
    admin = User.objects.create_superuser("admin", password="pw")
    client.force_login(admin)
    changelist = client.get(reverse("admin:framework_shop_product_changelist"))
    assert changelist.status_code == 200
    assert "Indexed" in changelist.content.decode()
    for status in IndexStatus.values:
        response = client.get(
            reverse("admin:framework_shop_product_changelist"),
            {"search_status": status},
        )
        assert response.status_code == 200
    for name in ("Summer dress", "Summer dress S", "Red gown"):
        change = client.get(
            reverse("admin:framework_shop_product_change", args=[shop[name].pk])
        )
        assert change.status_code == 200
        assert "images: " in change.content.decode()
    boots = shop["Boots"]
    url = reverse(
        "admin:framework_shop_product_accept_category",
        args=[boots.pk, shop["clothing"].pk],
    )
    response = client.post(url, follow=True)
    assert response.status_code == 200
    assert {c.name for c in boots.categories.all()} == {"Shoes", "Sale", "Clothing"}
    assert "added to the categories" in response.content.decode()
    response = client.post(
        reverse("admin:framework_shop_product_changelist"),
        {
            "action": "reindex_selected",
            "_selected_action": [p.pk for p in Product.objects.all()],
        },
        follow=True,
    )
    assert response.status_code == 200


def test_apply_action_on_many_to_many_says_it_adds(client, shop, settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "CATEGORY_APPLY_THRESHOLD": 0.0}
    before = {p.pk: p.categories.count() for p in Product.objects.all()}
    admin = User.objects.create_superuser("admin", password="pw")
    client.force_login(admin)
    response = client.post(
        reverse("admin:framework_shop_product_changelist"),
        {
            "action": "apply_suggested_categories",
            "_selected_action": [p.pk for p in Product.objects.all()],
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "(their other categories are kept)" in response.content.decode()
    after = {p.pk: p.categories.count() for p in Product.objects.all()}
    # Each product gained its top category unless it had it already.
    assert all(before[pk] <= after[pk] <= before[pk] + 1 for pk in before)
    assert sum(after.values()) > sum(before.values())


def test_category_names_read_without_str(client, shop):
    assert categories.display_name(shop["dresses"]) == "Dresses"
    body = client.get("/api/search/", {"q": "dress"}).json()
    assert body["categories"] and all(
        not c["name"].startswith("Category object") for c in body["categories"]
    )


def test_the_page_mounts_under_another_prefix_with_the_shops_price_and_url(
    client, shop
):
    assert client.get("/search/").content == b"the framework's own search"
    page = client.get("/find/", {"q": "gown"})
    assert page.status_code == 200
    html = page.content.decode()
    gown = shop["Red gown"]
    assert f'href="/catalogue/{gown.pk}/"' in html
    assert "from 10.00" in html  # the cheaper of its two stock records
    assert 'class="ss-chip' in html and "Category object" not in html
    # Links on the page stay under the prefix it is mounted at.
    assert 'href="?q=gown' in html
    assert Decimal("10.00") == min(r.price for r in gown.stockrecords.all())


def test_prefetched_galleries_are_read_without_a_query(shop, django_assert_num_queries):
    from shop_search.registry import declaration

    decl = declaration(Product)
    expected = [s.name for s in decl.image_sources(Product.objects.get(title="Boots"))]
    boots = Product.objects.prefetch_related("images").get(title="Boots")
    with django_assert_num_queries(0):
        names = [s.name for s in decl.image_sources(boots)]
    assert names == expected and len(names) == 2


def test_indexing_reads_galleries_in_a_query_not_one_per_product(shop):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    pks = list(Product.objects.order_by("pk").values_list("pk", flat=True))

    def queries(some):
        with CaptureQueriesContext(connection) as captured:
            # All current: only the reads that decide so. One batch each.
            index_objects(Product, some, documents=False, batch_size=len(pks))
        return len(captured)

    # Nine products cost what two do, plus one query for the parents'
    # galleries once variants are in the batch (it was one per product).
    assert 0 < queries(pks) - 1 <= queries(pks[:2])
