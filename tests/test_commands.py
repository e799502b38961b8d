"""shop_search_reindex and shop_search_status, as a shop's staff runs them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from demo_shop.catalog.models import Product
from shop_search.encoders import get_image_encoder
from shop_search.models import IndexStatus
from shop_search.signal_handlers import indexing_paused
from shop_search.testing import index_view

from .conftest import products_with_vectors

pytestmark = pytest.mark.django_db(transaction=True)


def _run(*args: str) -> str:
    out = StringIO()
    call_command("shop_search_reindex", *args, stdout=out)
    return out.getvalue()


def test_reindex_shows_progress_counts_and_summary(make_product):
    with indexing_paused():
        for _ in range(10):
            make_product()
    out = _run("--batch-size", "4")
    assert "catalog.Product: 10 pending product(s)" in out
    assert "10/10" in out  # the progress bar
    assert "Done in" in out and "10 encoded (10 images," in out and "images/s" in out
    assert products_with_vectors() == Product.objects.count()


def test_interrupted_reindex_rerun_encodes_nothing_twice(make_product, monkeypatch):
    with indexing_paused():
        products = [make_product() for _ in range(20)]
    encoder = get_image_encoder()
    original = encoder.encode_images
    encoded: list[int] = []

    def interrupt_on_third_batch(images):
        if len(encoded) == 2:
            raise KeyboardInterrupt  # Ctrl-C between two batches
        encoded.append(len(images))
        return original(images)

    monkeypatch.setattr(encoder, "encode_images", interrupt_on_third_batch)
    with pytest.raises(CommandError, match="run the command again") as stopped:
        _run("--batch-size", "4")
    assert stopped.value.returncode == 130  # as a shell reports Ctrl-C
    done = products_with_vectors()
    assert done == 8

    monkeypatch.setattr(
        encoder,
        "encode_images",
        lambda images: encoded.append(len(images)) or original(images),
    )
    out = _run("--batch-size", "4")
    assert "12 pending" in out
    assert sum(encoded) == len(products)  # every product encoded exactly once
    assert {index_view(p).status for p in Product.objects.all()} == {
        IndexStatus.INDEXED
    }


def test_a_second_reindex_at_once_stops_instead_of_repeating_the_work(
    make_product,
):
    """Found by an attack: two runs at once (overlapping cron jobs) each
    encoded nearly every pending product."""
    from django.db import connection

    from shop_search.management.commands.shop_search_reindex import LOCK_KEY

    with indexing_paused():
        make_product()
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.autocommit = True
        other.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])  # a run going on
        with pytest.raises(CommandError, match="Another shop_search_reindex"):
            _run()
        assert products_with_vectors() == 0
    finally:
        other.close()  # that run ends
    assert "1 encoded" in _run()
    with pytest.raises(CommandError, match="at least 1"):
        _run("--batch-size", "0")
    with pytest.raises(CommandError, match="0 or more"):
        call_command("shop_search_status", "--failures", "-1", stdout=StringIO())


def test_the_run_lock_outlives_the_reconnects_of_a_run(make_product, monkeypatch):
    """Found in review: the lock was held by Django's connection, which a
    run closes to reconnect after a database error; another run could then
    start."""
    import psycopg
    from django.db import connection, connections

    from shop_search.management.commands import shop_search_reindex as command

    with indexing_paused():
        make_product()
    taken: list[bool] = []
    index = command.index_objects

    def reconnect_then_index(*args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        with psycopg.connect(**params, autocommit=True) as other:
            # The run's database session ends (a restart, a failover) and it
            # reconnects, as `retrying` does after a database error.
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
            connections.close_all()
            query = "SELECT pg_try_advisory_lock(%s)"
            taken.append(other.execute(query, [command.LOCK_KEY]).fetchone()[0])
        return index(*args, **kwargs)

    monkeypatch.setattr(command, "index_objects", reconnect_then_index)
    _run()
    assert taken == [False]  # still this run's


def test_reindex_all_re_encodes_everything(make_product):
    for _ in range(3):
        make_product()
    out = _run("--all")
    assert "3 all product(s)" in out and "3 encoded" in out


def test_reindex_rejects_an_unknown_or_unsearchable_model():
    with pytest.raises(CommandError, match="Unknown model"):
        call_command("shop_search_reindex", "--model", "nope.Nope")
    with pytest.raises(CommandError, match="not searchable"):
        call_command("shop_search_reindex", "--model", "catalog.Category")


def test_reindex_reports_a_model_that_cannot_load(make_product, settings):
    with indexing_paused():
        make_product()
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "IMAGE_MODEL": "/nonexistent/model"}
    with pytest.raises(CommandError, match="/nonexistent/model"):
        _run()


def test_status_counts_each_state_and_lists_failures(make_product):
    make_product()
    make_product()
    make_product(image=b"broken")
    with indexing_paused():
        make_product()
    make_product(image=b"")
    from demo_shop.catalog.models import Product
    from shop_search.indexing import index_documents

    index_documents(Product)  # what the saves queue after commit
    out = StringIO()
    call_command("shop_search_status", "--model", "catalog.Product", stdout=out)
    text = out.getvalue()
    lines = {
        line.strip().rsplit(None, 1)[0]: line.split()[-1]
        for line in text.splitlines()
        if line.startswith("  ") and line.split()[-1].isdigit()
    }
    assert lines["total"] == "5"
    assert lines["Indexed"] == "2"
    assert lines["Failed, will retry"] == "1"
    assert lines["Not indexed yet"] == "1"
    assert lines["No image"] == "1"
    assert lines["with words"] == "5" and lines["with text vectors"] == "5"
    assert "tiny-clip" in text
    assert "(stale" not in text  # the vectors are the serving model's
    assert "image_" in text  # the failure reason
