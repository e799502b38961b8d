"""The request path of a text search: what it sends to the database, and
that the settings of a search still hold where it takes the short way."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from demo_shop.catalog.models import Product, ProductImage
from shop_search.ranking import hnsw_cursor

from .conftest import png_bytes

SETTINGS = (
    "SELECT current_setting('hnsw.ef_search'), "
    "current_setting('hnsw.iterative_scan'), "
    "current_setting('hnsw.max_scan_tuples'), "
    "current_setting('max_parallel_workers_per_gather'), "
    "current_setting('statement_timeout')"
)


def slow_products(request=None):
    """Visible products whose visibility check sleeps per row: a search that
    runs away."""
    return Product.objects.extra(
        where=['(SELECT true FROM pg_sleep(0.05 + 0 * "catalog_product"."id"))']
    )


def _plain_settings():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM shop_search_imagevector LIMIT 0")  # pgvector
        cursor.execute(SETTINGS)
        return cursor.fetchone()


def _search_settings():
    with hnsw_cursor("default") as cursor:
        cursor.execute(SETTINGS, [])
        return cursor.fetchone()


@pytest.fixture
def search_settings(settings):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "EF_SEARCH": 123,
        "MAX_SCAN_TUPLES": 4567,
        "STATEMENT_TIMEOUT": 0.25,
    }


@pytest.mark.django_db(transaction=True)
def test_a_search_statement_runs_with_the_search_settings_and_leaves_none(
    search_settings,
):
    before = _plain_settings()
    assert connection.get_autocommit()  # the way a request without a transaction goes
    assert _search_settings() == ("123", "relaxed_order", "4567", "0", "250ms")
    # Nothing stays on the (pooled) connection for the next statement.
    assert _plain_settings() == before


@pytest.mark.django_db
def test_inside_a_transaction_too(search_settings):
    assert connection.in_atomic_block  # as with ATOMIC_REQUESTS
    assert _search_settings() == ("123", "relaxed_order", "4567", "0", "250ms")


@pytest.mark.django_db(transaction=True)
def test_a_runaway_search_is_cancelled_with_a_503(client, catalog, settings):
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "STATEMENT_TIMEOUT": 0.3,
        "VISIBLE_PRODUCTS": "tests.test_thin_path.slow_products",
    }
    response = client.get("/api/search/", {"q": "red dress"})
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"] == "2"
    # The connection goes on serving, without the timeout.
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "VISIBLE_PRODUCTS": None}
    assert client.get("/api/search/", {"q": "red dress"}).status_code == 200
    assert _plain_settings()[-1] == "0"


@pytest.mark.django_db
def test_a_runaway_search_leaves_the_callers_transaction_usable(catalog, settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "STATEMENT_TIMEOUT": 0.2}
    with transaction.atomic():
        with pytest.raises(OperationalError, match="statement timeout"):
            with hnsw_cursor("default") as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [2])
        assert Product.objects.count() == 100


@pytest.mark.django_db(transaction=True)
def test_a_text_search_takes_two_statements(client, catalog, monkeypatch):
    from shop_search import read_cache

    # The per-process caches filled, and kept however slow the first search.
    monkeypatch.setattr(read_cache._serving, "seconds", 3600)
    client.get("/api/search/", {"q": "shoe"})
    with CaptureQueriesContext(connection) as queries:
        body = client.get("/api/search/", {"q": "dress", "limit": 10}).json()
    assert len(body["results"]) == 10
    # One ranks (every channel, its settings in the same message), one reads
    # the page's products with their categories; no gallery is read for
    # products with an image of their own.
    assert len(queries.captured_queries) == 2, [
        q["sql"][:80] for q in queries.captured_queries
    ]


@pytest.mark.django_db
def test_a_product_without_its_own_image_shows_its_first_gallery_image(
    client, make_product, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # indexed
        own = make_product(name="Red dress with a photo")
        bare = make_product(image=b"", name="Red dress from the gallery")
        for position in (2, 1):
            picture = ProductImage(product=bare, position=position)
            picture.image.save(f"g{position}.png", ContentFile(png_bytes()))
    body = client.get("/api/search/", {"q": "red dress", "limit": 10}).json()
    images = {r["product"]["id"]: r["product"]["image"] for r in body["results"]}
    first = bare.gallery.order_by("position").first()
    assert images[bare.pk].endswith(first.image.url)
    assert images[own.pk].endswith(own.image.url)
