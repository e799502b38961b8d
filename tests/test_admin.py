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


def test_the_reindex_action_refuses_more_than_a_request_can_encode(
    admin_client, make_product, settings
):
    """Found by an attack: 4,734 products took 23 s in one request with the
    tiny models; full-size models would outlast any proxy's timeout."""
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "ADMIN_REINDEX_LIMIT": 2}
    with indexing_paused():
        products = [make_product() for _ in range(3)]
    response = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {"action": "reindex_selected", "_selected_action": [p.pk for p in products]},
        follow=True,
    )
    [message] = [str(m) for m in response.context["messages"]]
    assert "3 products selected" in message and "at most 2" in message
    assert {index_view(p).status for p in products} == {IndexStatus.MISSING}


def test_change_page_shows_the_failure_reason(admin_client, make_product):
    product = make_product(image=b"junk")
    page = admin_client.get(
        reverse("admin:catalog_product_change", args=[product.pk])
    ).content.decode()
    stored = Product.objects.get(pk=product.pk)
    assert "error after 1 attempt(s)" in page
    assert index_view(stored).error.split(":")[0] in page


def _change_form(product, **fields):
    """The change form as posted, the gallery inline left as it is."""
    return {
        "sku": product.sku,
        "name": product.name,
        "name_translations": "{}",
        "description": "",
        "price": "12.00",
        "currency": "EUR",
        "category": product.category_id,
        "colour": "",
        "in_stock": "on",
        "is_published": "on",
        "gallery-TOTAL_FORMS": "0",
        "gallery-INITIAL_FORMS": "0",
        "gallery-MIN_NUM_FORMS": "0",
        "gallery-MAX_NUM_FORMS": "1000",
        **fields,
    }


def test_a_save_whose_image_cannot_be_indexed_says_so(admin_client, make_product):
    """Found by an attack on the admin: the save said only "was changed
    successfully"; the reason was on the change page staff had just left."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from .conftest import png_bytes
    from .hostile_images import png_with_header

    product = make_product()
    url = reverse("admin:catalog_product_change", args=[product.pk])
    # A valid PNG for the form, 49 megapixels for the search's image limit.
    big = png_with_header(7000, 7000)
    broken = SimpleUploadedFile("big.png", big, "image/png")
    response = admin_client.post(url, _change_form(product, image=broken), follow=True)
    page = response.content.decode()
    assert "was saved, but its images could not be indexed for search" in page
    assert index_view(Product.objects.get(pk=product.pk)).error.split(":")[0] in page
    good = SimpleUploadedFile("good.png", png_bytes("green"), "image/png")
    fine = admin_client.post(url, _change_form(product, image=good), follow=True)
    assert "could not be indexed" not in fine.content.decode()
    assert index_view(Product.objects.get(pk=product.pk)).status == "indexed"


def test_editing_in_the_admin_keeps_the_vector(admin_client, make_product):
    product = make_product()
    before = index_view(Product.objects.get(pk=product.pk)).vector
    url = reverse("admin:catalog_product_change", args=[product.pk])
    response = admin_client.post(url, _change_form(product, name="Edited"))
    assert response.status_code == 302
    after = Product.objects.get(pk=product.pk)
    assert after.name == "Edited"
    assert index_view(after).vector is not None
    assert (index_view(after).vector == before).all()
