"""A catalog shaped like a shop framework's: trees, many-to-many, stock records."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.urls import reverse

from shop_search import categories
from shop_search.indexing import index_objects
from tests.framework_shop.models import Category, Product, StockRecord

from .conftest import png_bytes

pytestmark = pytest.mark.django_db


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
    products = {}
    for n, (title, cats, colour) in enumerate(
        [
            ("Red gown", [evening, sale], "red"),
            ("Blue dress", [dresses], "blue"),
            ("Boots", [shoes, sale], "brown"),
            ("Sandals", [shoes], "yellow"),
        ]
    ):
        product = Product(title=title, upc=f"UPC-{n}")
        product.image.save(f"f{n}.png", ContentFile(png_bytes(colour)), save=False)
        product.save()
        product.categories.set(cats)
        for partner, price in (("A", 10 + n), ("B", 20 + n)):
            StockRecord.objects.create(product=product, partner=partner, price=price)
        products[title] = product
    # Saves index after commit; inside the test's transaction, index now.
    index_objects(Product, [p.pk for p in products.values()])
    return {
        "clothing": clothing,
        "dresses": dresses,
        "shoes": shoes,
        "sale": sale,
        **products,
    }


def _titles(body):
    return sorted(hit["product"]["name"] for hit in body["results"])


def test_a_parent_category_finds_the_products_of_its_descendants(client, shop):
    body = client.get(
        "/api/search/", {"q": "dress", "category": shop["clothing"].pk}
    ).json()
    assert _titles(body) == ["Blue dress", "Red gown"]
    body = client.get("/api/search/", {"q": "dress", "category": shop["sale"].pk})
    assert _titles(body.json()) == ["Boots", "Red gown"]


def test_two_stock_records_under_a_price_filter_give_one_hit(client, shop):
    body = client.get("/api/search/", {"q": "shoe", "max_price": "25"}).json()
    titles = [hit["product"]["name"] for hit in body["results"]]
    assert sorted(titles) == ["Blue dress", "Boots", "Red gown", "Sandals"]


def test_suggestions_add_a_category_and_keep_the_others(shop):
    gown = shop["Red gown"]
    gown.refresh_from_db()
    assert gown.search_embedding is not None
    changes = categories.apply_suggestions(
        Product.objects.filter(pk=gown.pk), threshold=0.0
    )
    assert len(changes) == 1
    _product, old, new, _p = changes[0]
    assert old is None
    names = {c.name for c in gown.categories.all()}
    assert names == {"Evening dresses", "Sale", new.name} and len(names) == 3


def test_the_admin_accept_button_adds_a_category(client, shop):
    admin = User.objects.create_superuser("admin", password="pw")
    client.force_login(admin)
    boots = shop["Boots"]
    url = reverse(
        "admin:framework_shop_product_accept_category",
        args=[boots.pk, shop["clothing"].pk],
    )
    response = client.post(url, follow=True)
    assert response.status_code == 200
    assert {c.name for c in boots.categories.all()} == {"Shoes", "Sale", "Clothing"}
    assert "added to the categories" in response.content.decode()
    change = client.get(reverse("admin:framework_shop_product_change", args=[boots.pk]))
    assert change.status_code == 200


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
    page = client.get("/find/", {"q": "dress"})
    assert page.status_code == 200
    html = page.content.decode()
    gown = shop["Red gown"]
    assert f'href="/catalogue/{gown.pk}/"' in html
    assert "from 10.00" in html  # the cheaper of its two stock records
    assert 'class="ss-chip' in html and "Category object" not in html
    # Links on the page stay under the prefix it is mounted at.
    assert 'href="?q=dress' in html
    assert Decimal("10.00") == min(r.price for r in gown.stockrecords.all())
