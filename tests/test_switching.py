"""Switching IMAGE_MODEL/TEXT_MODEL: searches never mix models and never go dark."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from demo_shop.catalog.models import Product
from shop_search import search, switching
from shop_search.indexing import index_objects
from shop_search.models import ImageVector, IndexState
from shop_search.signal_handlers import indexing_paused
from shop_search.testing import build_test_models, index_view

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def old_and_new(settings, tmp_path_factory):
    old = settings.SHOP_SEARCH["IMAGE_MODEL"]
    new = build_test_models(tmp_path_factory.mktemp("new-models"), seed=1)
    return old, new


def _switch_settings(settings, new):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "IMAGE_MODEL": new.image,
        "TEXT_MODEL": new.text,
    }


def test_searches_use_the_old_model_until_every_new_vector_exists(
    settings, make_product, old_and_new
):
    old, new = old_and_new
    products = [make_product(colour=c) for c in ("red", "green", "blue", "black")]
    _switch_settings(settings, new)
    assert switching.in_transition()

    # Still answering, with old-model vectors only, queried by the old text model.
    page = search.search_text(Product.objects.all(), "rotes Kleid", limit=10)
    assert len(page) == 4
    assert {index_view(hit.object).image_model for hit in page} == {old}

    # A product saved meanwhile is searchable at once (old model) and gets a
    # new-model vector on the side.
    added = make_product(colour="yellow")
    assert index_view(Product.objects.get(pk=added.pk)).image_model == old
    assert ImageVector.objects.filter(
        object_pk=str(added.pk), image_model=new.image
    ).exists()

    # Half the catalog done: no switch yet.
    index_objects(Product, [products[0].pk, products[1].pk])
    assert switching.promote([Product]) is None
    assert switching.serving().image_model == old
    page = search.search_text(Product.objects.all(), "rotes Kleid", limit=10)
    assert {index_view(hit.object).image_model for hit in page} == {old} and len(
        page
    ) == 5

    out = StringIO()
    call_command("shop_search_status", stdout=out)
    assert "new model vectors" in out.getvalue() and "3 of 5" in out.getvalue()

    # The re-index completes the new vectors and switches in one step.
    out = StringIO()
    call_command("shop_search_reindex", stdout=out)
    assert "Switched searches" in out.getvalue()
    assert switching.serving() == switching.Serving(new.image, new.text)
    assert set(ImageVector.objects.values_list("image_model", flat=True)) == {new.image}
    page = search.search_text(Product.objects.all(), "rotes Kleid", limit=10)
    assert len(page) == 5 and {index_view(h.object).image_model for h in page} == {
        new.image
    }


def test_the_switched_vectors_are_the_new_models(settings, make_product, old_and_new):
    _old, new = old_and_new
    product = make_product()
    _switch_settings(settings, new)
    call_command("shop_search_reindex", verbosity=0)
    stored = index_view(Product.objects.get(pk=product.pk)).vector
    with product.image.open("rb") as fh:
        expected = search.image_vector(fh.read())  # the serving (new) image model
    assert float(stored @ expected) == pytest.approx(1.0, abs=0.01)
    # The words' vectors are rewritten by the new text model in the same run:
    # the meaning channel is not left empty until another one.
    from shop_search.models import SearchDocument

    assert set(SearchDocument.objects.values_list("text_model", flat=True)) == {
        new.text
    }


def test_a_new_text_model_alone_is_switched_too(settings, make_product, old_and_new):
    """Found by an attack: with IMAGE_MODEL unchanged, a new TEXT_MODEL was
    ignored by the status and by every re-index."""
    from shop_search.models import SearchDocument

    _old, new = old_and_new
    products = [make_product(colour=c) for c in ("red", "blue")]
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "TEXT_MODEL": new.text}
    out = StringIO()
    call_command("shop_search_status", stdout=out)
    assert f"TEXT_MODEL names {new.text}" in out.getvalue()
    out = StringIO()
    call_command("shop_search_reindex", stdout=out)
    assert "Switching the words' vectors" in out.getvalue()
    assert switching.serving().text_model == new.text
    assert set(SearchDocument.objects.values_list("text_model", flat=True)) == {
        new.text
    }
    page = search.search_text(Product.objects.all(), products[0].name, limit=5)
    assert page.hits[0].object == products[0]


def test_a_text_model_that_cannot_load_is_not_switched_to(settings, make_product):
    """Found in review: the new TEXT_MODEL became the serving one before it
    was loaded, and a typo left every product without its words' vector
    and every text search answering 503."""
    from shop_search.models import SearchDocument

    product = make_product()
    serving_text = switching.serving().text_model
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "TEXT_MODEL": "/no/such/model"}
    err = StringIO()
    call_command("shop_search_reindex", stdout=StringIO(), stderr=err)
    assert "TEXT_MODEL not switched" in err.getvalue()
    assert switching.serving().text_model == serving_text
    document = SearchDocument.objects.get(object_pk=str(product.pk))
    assert document.text_model == serving_text and document.vector is not None


def test_switching_back_before_the_end_abandons_the_new_vectors(
    settings, make_product, old_and_new
):
    old, new = old_and_new
    with indexing_paused():
        products = [make_product() for _ in range(3)]
    call_command("shop_search_reindex", verbosity=0)
    original = dict(settings.SHOP_SEARCH)
    _switch_settings(settings, new)
    index_objects(Product, [products[0].pk])  # one pending new vector
    settings.SHOP_SEARCH = original
    assert not switching.in_transition()
    assert switching.promote([Product]) is None
    assert IndexState.objects.get().image_model == old
    out = StringIO()
    call_command("shop_search_reindex", stdout=out)
    assert "0 pending" in out.getvalue()


def test_a_model_that_never_produced_vectors_is_not_kept_serving(
    settings, make_product, old_and_new
):
    _old, new = old_and_new
    # Say the first configured model could not be downloaded: nothing indexed.
    IndexState.objects.update_or_create(
        pk=1, defaults={"image_model": "clip-never-loaded", "text_model": "x"}
    )
    assert switching.serving().image_model != "clip-never-loaded"
    product = make_product()  # indexed with the configured model at once
    assert index_view(Product.objects.get(pk=product.pk)).vector is not None
