"""Zero-shot category suggestions, and staff accepting them in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from demo_shop.catalog.models import Category, Product
from shop_search import categories, search

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop_categories(category):
    extra = [
        Category.objects.create(name=name, slug=name.lower(), translations=tr)
        for name, tr in [
            ("Shoes", {"de": "Schuhe", "zh": "鞋"}),
            ("Lamps", {"de": "Lampen"}),
            ("Mugs", {}),
        ]
    ]
    return [category, *extra]


def test_probabilities_cover_every_category_and_sum_to_one(
    shop_categories, make_product
):
    product = Product.objects.get(pk=make_product().pk)
    suggestions = categories.suggest_for_product(product)
    assert {s.category.pk for s in suggestions} == {c.pk for c in shop_categories}
    assert sum(s.probability for s in suggestions) == pytest.approx(1.0, abs=1e-6)
    probabilities = [s.probability for s in suggestions]
    assert probabilities == sorted(probabilities, reverse=True)


def test_prompts_use_every_language_of_a_category(shop_categories, settings):
    shoes = shop_categories[1]
    names = categories.category_names(shoes)
    assert names == {"en": "Shoes", "de": "Schuhe", "zh": "鞋"}
    prompts = categories._prompts(names)
    assert prompts == ["a photo of a Shoes", "ein Foto von Schuhe", "鞋的照片"]


def test_a_renamed_category_gets_a_new_prompt_vector(shop_categories):
    before = categories.category_matrix(shop_categories)[1].copy()
    shop_categories[1].name = "Boots"
    after = categories.category_matrix(shop_categories)[1]
    assert not (before == after).all()


def test_text_query_categories(shop_categories):
    vector = search.text_vector("Schuhe")
    suggestions = categories.classify(vector, shop_categories)
    assert len(suggestions) == 4
    assert sum(s.probability for s in suggestions) == pytest.approx(1.0, abs=1e-6)


def test_staff_accept_a_suggestion_on_the_change_page(
    admin_client, shop_categories, make_product
):
    product = make_product()
    url = reverse("admin:catalog_product_change", args=[product.pk])
    page = admin_client.get(url).content.decode()
    assert "Suggested categories" in page
    top = categories.suggest_for_product(Product.objects.get(pk=product.pk))[:3]
    target = next(s.category for s in top if s.category.pk != product.category_id)
    accept = reverse(
        "admin:catalog_product_accept_category", args=[product.pk, target.pk]
    )
    assert f'formaction="{accept}"' in page
    response = admin_client.post(accept, follow=True)
    assert response.status_code == 200
    assert Product.objects.get(pk=product.pk).category == target
    assert admin_client.get(accept).status_code == 403  # GET changes nothing
    # Ids that are no keys are 404, as in the admin's own views (not 500).
    base = f"/admin/catalog/product/{product.pk}/shop-search/accept-category/"
    for bad in (f"{base}abc/", f"{base}1.5/", f"{base}999999/"):
        assert admin_client.post(bad).status_code == 404
    gone = f"/admin/catalog/product/abc/shop-search/accept-category/{target.pk}/"
    assert admin_client.post(gone).status_code == 404


def test_bulk_action_applies_confident_suggestions_and_reports(
    admin_client, settings, shop_categories, make_product
):
    products = [make_product(colour=c) for c in ("red", "blue", "green")]
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "CATEGORY_APPLY_THRESHOLD": 0.0}
    expected = {
        p.pk: categories.suggest_for_product(Product.objects.get(pk=p.pk))[0].category
        for p in products
    }
    response = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {
            "action": "apply_suggested_categories",
            "_selected_action": [p.pk for p in products],
        },
        follow=True,
    )
    message = " ".join(str(m) for m in response.context["messages"])
    changed = [pk for pk, cat in expected.items() if cat != shop_categories[0]]
    for pk, cat in expected.items():
        assert Product.objects.get(pk=pk).category == cat
    if changed:
        assert f"Changed the category of {len(changed)} product" in message
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "CATEGORY_APPLY_THRESHOLD": 1.01}
    response = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {
            "action": "apply_suggested_categories",
            "_selected_action": [p.pk for p in products],
        },
        follow=True,
    )
    assert "No category changed" in " ".join(
        str(m) for m in response.context["messages"]
    )
