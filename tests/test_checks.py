"""System checks fire, with their stable ids, on each misconfiguration."""

from __future__ import annotations

import pytest
from django.db import connection, connections, models
from django.test.utils import isolate_apps

from shop_search.checks import (
    check_dimensions,
    check_pgvector,
    check_settings,
    pgvector_messages,
)
from shop_search.models import SearchableProduct
from shop_search.testing import build_test_models


def _ids(messages):
    return sorted(m.id for m in messages)


@isolate_apps("shop_search")
def test_declared_fields_must_exist_and_the_image_must_be_a_file_field():
    class Widget(SearchableProduct):
        title = models.CharField(max_length=10)
        picture = models.CharField(max_length=10)
        search_image_field = "picture"
        search_text_fields = ["title", "summary"]
        search_category_field = "kind"

        class Meta(SearchableProduct.Meta):
            app_label = "shop_search"

    messages = Widget.check()
    assert _ids(messages) == [
        "shop_search.E010",
        "shop_search.E010",
        "shop_search.E011",
    ]
    assert "'summary'" in " ".join(m.msg for m in messages)


@isolate_apps("shop_search")
def test_a_gallery_named_without_its_file_field_is_an_error():
    class Gadget(SearchableProduct):
        search_images = ["photos"]
        search_image_field = None

        class Meta:
            app_label = "shop_search"

    class Photo(models.Model):  # noqa: DJ008
        gadget = models.ForeignKey(Gadget, models.CASCADE, related_name="photos")
        file = models.ImageField()

        class Meta:
            app_label = "shop_search"

    messages = Gadget.check()
    assert _ids(messages) == ["shop_search.E011"]
    assert "'photos__image'" in messages[0].msg


@isolate_apps("shop_search")
def test_a_well_declared_model_passes():
    class Thing(SearchableProduct):
        image = models.ImageField()

        class Meta(SearchableProduct.Meta):
            app_label = "shop_search"

    class Shot(models.Model):  # noqa: DJ008
        thing = models.ForeignKey(Thing, models.CASCADE, related_name="shots")
        file = models.ImageField()

        class Meta:
            app_label = "shop_search"

    Thing.search_images = ["image", "shots__file"]
    try:
        assert Thing.check() == []
    finally:
        del Thing.search_images


def test_dimension_mismatches_are_errors(settings, tmp_path):
    assert check_dimensions() == []
    small = build_test_models(tmp_path / "small", dimensions=256)
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "IMAGE_MODEL": small.image}
    messages = check_dimensions()
    assert _ids(messages) == ["shop_search.E003", "shop_search.E004"]
    e003 = next(m for m in messages if m.id == "shop_search.E003")
    assert "stores 512-dimensional vectors" in e003.msg
    assert "256-dimensional" in e003.msg


def test_unknown_indexing_mode_is_an_error(settings):
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "INDEXING_MODE": "later"}
    assert _ids(check_settings()) == ["shop_search.E005"]


@pytest.mark.django_db(transaction=True)
def test_pgvector_present_passes():
    assert check_pgvector(databases=["default"]) == []


@pytest.fixture
def other_database():
    """Open a connection to another database, outside Django's test guard."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    opened = []

    def open_(**overrides):
        settings_dict = dict(connections["default"].settings_dict)
        # Django keeps one pool per alias for the process: these throwaway
        # connections to other databases must not share one.
        settings_dict["OPTIONS"] = {
            k: v for k, v in settings_dict["OPTIONS"].items() if k != "pool"
        }
        wrapper = DatabaseWrapper({**settings_dict, **overrides}, alias="other")
        opened.append(wrapper)
        return wrapper

    yield open_
    for wrapper in opened:
        wrapper.close()


@pytest.mark.django_db(transaction=True)
def test_extension_not_created_is_a_warning_with_the_sql(other_database):
    with connection.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS shop_search_noext")
        cursor.execute("CREATE DATABASE shop_search_noext")
    try:
        wrapper = other_database(NAME="shop_search_noext")
        messages = pgvector_messages(wrapper, "noext")
        assert _ids(messages) == ["shop_search.W001"]
        assert "CREATE EXTENSION IF NOT EXISTS vector;" in messages[0].hint
        wrapper.close()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS shop_search_noext")


@pytest.mark.django_db
def test_a_server_without_pgvector_is_an_error(other_database):
    import psycopg

    try:
        with psycopg.connect(
            "host=127.0.0.1 user=postgres dbname=postgres", connect_timeout=3
        ) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
    except psycopg.OperationalError:
        pytest.skip("no second PostgreSQL server on 127.0.0.1:5432 to test against")
    if available:
        pytest.skip("the server on 127.0.0.1:5432 has pgvector")
    wrapper = other_database(
        HOST="127.0.0.1", PORT="5432", NAME="postgres", USER="postgres", PASSWORD=""
    )
    messages = pgvector_messages(wrapper, "plain")
    assert _ids(messages) == ["shop_search.E001"]
    assert "CREATE EXTENSION" in messages[0].hint
