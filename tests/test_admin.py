"""The admin parts staff use: status column, filter, action, failure reason."""

from __future__ import annotations

import pytest
from django.urls import reverse

from demo_shop.catalog.models import Product
from shop_search.models import IndexStatus
from shop_search.signal_handlers import indexing_paused
from shop_search.testing import index_view

pytestmark = pytest.mark.django_db(transaction=True)


def test_changelist_shows_status_and_filters_by_it(admin_client, make_product):
    make_product(name="Good one")
    make_product(name="Broken one", image=b"not an image")
    url = reverse("admin:catalog_product_changelist")
    page = admin_client.get(url).content.decode()
    assert "search index" in page
    assert "Indexed" in page and "Failed, will retry" in page
    failed = admin_client.get(url, {"search_status": "failed"}).content.decode()
    assert "Broken one" in failed and "Good one" not in failed


def test_reindex_action_reports_counts(admin_client, make_product):
    with indexing_paused():
        ok = [make_product() for _ in range(2)]
    bad = make_product(image=b"junk")
    response = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {"action": "reindex_selected", "_selected_action": [p.pk for p in [*ok, bad]]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert messages == ["Re-indexed 2 products (1 failed, 0 without image)."]
    assert index_view(Product.objects.get(pk=ok[0].pk)).status == IndexStatus.INDEXED


def test_change_page_shows_the_failure_reason(admin_client, make_product):
    product = make_product(image=b"junk")
    page = admin_client.get(
        reverse("admin:catalog_product_change", args=[product.pk])
    ).content.decode()
    stored = Product.objects.get(pk=product.pk)
    assert "error after 1 attempt(s)" in page
    assert index_view(stored).error.split(":")[0] in page


def test_editing_in_the_admin_keeps_the_vector(admin_client, make_product):
    product = make_product()
    before = index_view(Product.objects.get(pk=product.pk)).vector
    url = reverse("admin:catalog_product_change", args=[product.pk])
    response = admin_client.post(
        url,
        {
            "sku": product.sku,
            "name": "Edited",
            "name_translations": "{}",
            "description": "",
            "price": "12.00",
            "currency": "EUR",
            "category": product.category_id,
            "colour": "",
            "in_stock": "on",
            "is_published": "on",
            # The gallery inline, left as it is.
            "gallery-TOTAL_FORMS": "0",
            "gallery-INITIAL_FORMS": "0",
            "gallery-MIN_NUM_FORMS": "0",
            "gallery-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302
    after = Product.objects.get(pk=product.pk)
    assert after.name == "Edited"
    assert index_view(after).vector is not None
    assert (index_view(after).vector == before).all()
