"""Celery indexing mode, through the real Redis broker and a real worker."""

from __future__ import annotations

import time

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from demo_shop.catalog.models import Product
from demo_shop.celery import app as celery_app
from shop_search.models import IndexStatus
from shop_search.tasks import index_products
from shop_search.testing import index_view

from .conftest import products_with_vectors

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(settings):
    url = settings.CELERY_BROKER_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis broker at {url}")
    celery_app.conf.broker_url = url
    celery_app.conf.result_backend = None
    celery_app.control.purge()
    settings.SHOP_SEARCH = {**settings.SHOP_SEARCH, "INDEXING_MODE": "celery"}
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10
    ) as running:
        yield running


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_saved_products_are_indexed_by_a_worker(worker, make_product):
    products = [make_product(colour=c) for c in ("red", "blue", "green")]
    assert _wait_for(lambda: products_with_vectors() == 3), (
        "the worker did not index the products"
    )
    for product in products:
        assert (
            index_view(Product.objects.get(pk=product.pk)).status == IndexStatus.INDEXED
        )


def test_the_task_is_idempotent_and_acknowledged_late(worker, make_product):
    product = make_product()
    assert _wait_for(
        lambda: index_view(Product.objects.get(pk=product.pk)).vector is not None
    )
    first = index_view(Product.objects.get(pk=product.pk)).indexed_at
    # A duplicate delivery (redelivery after a lost worker) writes nothing.
    result = index_products.apply(args=["catalog.Product", [product.pk]]).get()
    assert result == {"encoded": 0, "failed": 0, "skipped": 1}
    assert index_view(Product.objects.get(pk=product.pk)).indexed_at == first
    assert index_products.acks_late and index_products.reject_on_worker_lost


def test_the_admin_action_queues_the_products_for_the_workers(
    worker, make_product, admin_client
):
    """In Celery mode the admin's re-index only sends tasks: a large
    selection no longer encodes in the request."""
    from django.urls import reverse

    from shop_search.signal_handlers import indexing_paused

    with indexing_paused():
        products = [make_product(colour=c) for c in ("red", "blue")]
    response = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {"action": "reindex_selected", "_selected_action": [p.pk for p in products]},
        follow=True,
    )
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Queued 2 products for re-indexing")
    assert _wait_for(lambda: products_with_vectors() == 2)
