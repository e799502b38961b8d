"""
The per-process caches of the request path: what a shopper sees follows a
change made in this process at once, and one made elsewhere within seconds;
nothing read inside a transaction is kept.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from demo_shop.catalog.models import Category, Product
from shop_search import categories, estimates, read_cache
from shop_search.models import IndexState

# Outside a transaction, as a request of a site without ATOMIC_REQUESTS runs.
pytestmark = pytest.mark.django_db(transaction=True)


def _indexstate_reads(call) -> int:
    with CaptureQueriesContext(connection) as queries:
        call()
    return sum("shop_search_indexstate" in q["sql"] for q in queries)


def test_serving_models_are_read_once_then_served_from_the_cache():
    first = read_cache.serving()
    assert _indexstate_reads(read_cache.serving) == 0
    assert read_cache.serving() == first


def test_a_promotion_in_this_process_is_followed_at_once():
    read_cache.serving()
    state = IndexState.objects.get()
    state.text_model = "new-text-model"
    state.save()  # as switching.promote() does
    assert read_cache.serving().text_model == "new-text-model"


def test_a_change_made_elsewhere_shows_within_serving_seconds(monkeypatch):
    old = read_cache.serving()
    # Another process's promotion: no signal reaches this one.
    IndexState.objects.update(text_model="changed-elsewhere")
    assert read_cache.serving() == old
    clock = read_cache.time.monotonic() + read_cache.SERVING_SECONDS + 0.1
    monkeypatch.setattr(read_cache.time, "monotonic", lambda: clock)
    assert read_cache.serving().text_model == "changed-elsewhere"


def test_inside_a_transaction_the_cache_reads_through_and_keeps_nothing():
    committed = read_cache.serving()
    with transaction.atomic():
        IndexState.objects.update(text_model="uncommitted")
        # The transaction sees its own change...
        assert read_cache.serving().text_model == "uncommitted"
        transaction.set_rollback(True)
    # ...and once rolled back, nobody sees it.
    assert read_cache.serving() == committed


def test_renamed_category_is_suggested_under_its_new_name_at_once(category):
    before = categories.for_query(Product, "Kleid", top=3)
    assert [s.category.name for s in before] == ["Dresses"]
    category.name = "Gowns"
    category.save()
    after = categories.for_query(Product, "Kleid", top=3)
    assert [s.category.name for s in after] == ["Gowns"]
    Category.objects.create(name="Shoes", slug="shoes")
    assert len(categories.for_query(Product, "Kleid", top=3)) == 2
    Category.objects.filter(name="Shoes").delete()
    assert len(categories.for_query(Product, "Kleid", top=3)) == 1


def test_category_suggestions_cost_no_query_once_cached(category):
    categories.for_query(Product, "Kleid", top=3)
    with CaptureQueriesContext(connection) as queries:
        categories.for_query(Product, "Kleid", top=3)
    assert not queries.captured_queries


def _explains(call) -> int:
    with CaptureQueriesContext(connection) as queries:
        call()
    return sum(q["sql"].startswith("EXPLAIN") for q in queries)


def test_row_estimate_is_planned_once_per_sql(category):
    products = Product.objects.all()
    estimate = estimates.estimated_rows(products)
    assert _explains(lambda: estimates.estimated_rows(products)) == 0
    assert estimates.estimated_rows(Product.objects.all()) == estimate
    # Another filter is another plan.
    assert _explains(lambda: estimates.estimated_rows(products.filter(price=3))) == 1
    assert _explains(lambda: estimates.estimated_rows(products.filter(price=4))) == 1


def test_migrate_or_flush_forgets_every_cached_read(category):
    from django.core.management import call_command

    read_cache.serving()
    assert categories.for_query(Product, "Kleid", top=3)
    call_command("flush", interactive=False, verbosity=0)
    assert _indexstate_reads(read_cache.serving) >= 1
    assert categories.for_query(Product, "Kleid", top=3) == []
